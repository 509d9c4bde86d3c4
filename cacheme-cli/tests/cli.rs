//! The command line itself: every `--help` stands on its own, and bad
//! arguments give a clear error and exit code 2.

mod support;

use predicates::prelude::*;
use support::{Project, cacheme};

const BOOK: &str = r#"
use cacheme::cache_store;

#[cache_store(key = "category:<category_id>:book:<book_id>", ttl = "5m")]
pub async fn book(ctx: &App, category_id: u32, book_id: u64) -> Result<Book, E> { loop {} }
"#;

#[test]
fn every_command_has_useful_help() {
    let cases: &[(&str, &[&str])] = &[
        (
            "init",
            &[
                "example store",
                "CACHEME_URL",
                "--path <DIR>",
                "--force",
                "--module <NAME>",
            ],
        ),
        (
            "check",
            &[
                "file:line:column",
                "share a name or a key pattern",
                "--manifest-path <PATH>",
            ],
        ),
        ("list", &["name, key template", "--format <FORMAT>", "json"]),
        (
            "get",
            &[
                "remaining TTL",
                "order the variables appear",
                "--param <NAME=VALUE>",
                "--key <KEY>",
                "--url <URL>",
                "CACHEME_URL",
            ],
        ),
        ("invalidate", &["Store::invalidate", "--store <NAME>", "--url <URL>"]),
        ("invalidate-all", &["Store::invalidate_all", "--version <V>", "SCAN"]),
        ("stats", &["per store and version", "memory", "--url <URL>"]),
        ("version", &["version of cargo-cacheme"]),
    ];
    for (command, needles) in cases {
        let output = cacheme().args([command, "--help"]).output().unwrap();
        assert!(output.status.success(), "{command} --help");
        let help = support::stdout(&output);
        assert!(
            help.contains(&format!("Usage: cargo cacheme {command}")),
            "{command}:\n{help}"
        );
        for needle in *needles {
            assert!(help.contains(needle), "{command} --help lacks {needle:?}:\n{help}");
        }
    }
    let overview = support::stdout(&cacheme().arg("--help").output().unwrap());
    for command in ["init", "check", "list", "get", "invalidate", "invalidate-all", "stats"] {
        assert!(overview.contains(command), "{overview}");
    }
}

#[test]
fn the_url_from_the_environment_is_never_shown_in_help() {
    cacheme()
        .args(["get", "--help"])
        .env("CACHEME_URL", "redis://:hunter2@127.0.0.1:1/")
        .assert()
        .success()
        .stdout(predicate::str::contains("hunter2").not());
}

#[test]
fn bad_arguments_are_usage_errors() {
    cacheme()
        .assert()
        .code(2)
        .stderr(predicate::str::contains("Usage: cargo cacheme"));
    cacheme()
        .arg("frobnicate")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unrecognized subcommand 'frobnicate'"));
    cacheme()
        .args(["list", "--format", "xml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("invalid value 'xml'").and(predicate::str::contains("table, json")));
    cacheme()
        .args(["get", "--url", "memory://"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--store <NAME>"));
    cacheme()
        .args(["invalidate-all", "--url", "memory://"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--store <NAME>"));
    cacheme()
        .args(["get", "--key", "k", "--param", "a=1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));
    cacheme()
        .args(["init", "--module", "1x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("a module name is a Rust identifier"));
}

#[test]
fn mistakes_about_stores_and_values_are_usage_errors_that_say_what_is_expected() {
    let project = Project::new(&[("src/lib.rs", BOOK)]);
    project
        .cacheme()
        .args(["get", "--store", "Nope", "--url", "memory://"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "error: unknown store \"Nope\"; declared stores: BookStore",
        ));
    project
        .cacheme()
        .args(["get", "--store", "BookStore", "7", "--url", "memory://"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "BookStore's key `category:<category_id>:book:<book_id>` takes 2 value(s): <category_id> <book_id>, in that order (or --param NAME=VALUE); got 1",
        ));
    project
        .cacheme()
        .args([
            "get",
            "--store",
            "BookStore",
            "--param",
            "category_id=7",
            "--param",
            "id=1",
        ])
        .args(["--url", "memory://"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--param id: no such variable"));
    project
        .cacheme()
        .args(["get", "--store", "BookStore", "7", "42"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "no cache URL: pass --url URL or set CACHEME_URL",
        ));
    project
        .cacheme()
        .args(["stats", "--url", "nonsense://x"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("unknown cache provider \"nonsense\""));
    project
        .cacheme()
        .args(["stats", "--url", "cache-host:6379"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("the cache URL has no scheme")
                .and(predicate::str::contains("`redis://host:6379`"))
                .and(predicate::str::contains("cache-host").not()),
        );
    project
        .cacheme()
        .args(["get", "--store", "BookStore", "abc", "42", "--url", "memory://"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "\"abc\" is not a `u32`, the type of BookStore's parameter `category_id`",
        ));
}

#[test]
fn help_says_what_each_command_does_and_only_that() {
    let help = |command: &str| support::stdout(&cacheme().args([command, "--help"]).output().unwrap());
    let get = help("get");
    assert!(
        get.contains("(`:g` and its number appended)"),
        "clap keeps the text as written:\n{get}"
    );
    assert!(get.contains("--codec <CODEC>"), "{get}");
    let invalidate = help("invalidate");
    assert!(
        !invalidate.contains("--codec"),
        "invalidate decodes nothing:\n{invalidate}"
    );
    let stats = help("stats");
    assert!(
        stats.contains("`stats` one object") && !stats.contains("One JSON array"),
        "{stats}"
    );
    let check = help("check");
    assert!(
        check.contains("it does not compile them") && check.contains("`cargo check` reports"),
        "check says what it does not check:\n{check}"
    );
}

#[test]
fn stats_shows_stores_without_keys_and_says_what_memory_is() {
    let project = Project::new(&[("src/lib.rs", BOOK)]);
    project
        .cacheme()
        .args(["stats", "--url", "memory://"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("BookStore")
                .and(predicate::str::contains("category:<category_id>:book:<book_id>")),
        )
        .stderr(predicate::str::contains(
            "note: memory:// is an in-process cache of this command",
        ));
    let json = project
        .cacheme()
        .args(["stats", "--url", "memory://", "--format", "json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        report["stores"],
        serde_json::json!([{"store": "BookStore", "version": "1", "keys": 0}])
    );
}

#[test]
fn list_exits_1_on_stores_the_client_refuses_together_as_check_does() {
    let twice = r#"
#[cache_store(key = "book:<id>", ttl = "5m")]
pub async fn book(ctx: &App, id: u64) -> Result<Book, E> { loop {} }
#[cache_store(key = "book:<n>", ttl = "5m")]
pub async fn novel(ctx: &App, n: u64) -> Result<Book, E> { loop {} }
"#;
    let project = Project::new(&[("src/lib.rs", twice)]);
    project
        .cacheme()
        .arg("list")
        .assert()
        .code(1)
        .stdout(predicate::str::contains("BookStore").and(predicate::str::contains("NovelStore")))
        .stderr(predicate::str::contains("the same key pattern"));
    project.cacheme().arg("check").assert().code(1);
}

#[test]
fn outside_a_cargo_project_it_says_so() {
    let empty = tempfile::tempdir().unwrap();
    cacheme()
        .arg("check")
        .current_dir(empty.path())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("could not find Cargo.toml"));
    cacheme()
        .args(["list", "--manifest-path", "/nonexistent/Cargo.toml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "--manifest-path /nonexistent/Cargo.toml: no such file",
        ));
}

#[test]
fn version_prints_the_version() {
    cacheme()
        .arg("version")
        .assert()
        .success()
        .stdout(format!("cargo-cacheme {}\n", env!("CARGO_PKG_VERSION")));
}
