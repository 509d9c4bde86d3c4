//! `check` and `list` on crates written to temp dirs: duplicates across
//! files, the macro's own errors at the compiler's positions, and the
//! listing in both formats.

mod support;

use predicates::prelude::*;
use support::Project;

const LIB: &str = "mod catalog;\nmod people;\n";

const CATALOG: &str = r#"use cacheme::cache_store;

#[cache_store(key = "book:<id>", ttl = "5m", version = 2, singleflight, local, codec = "json")]
pub async fn book(ctx: &App, id: u64) -> Result<Book, E> {
    loop {}
}

mod nested {
    #[cacheme::cache_store(key = "shelf:<room>:<n>", ttl = "1h30m", ttl_jitter = "10%", prefix = "library", lock_ttl = "10s", version = crate::shelf_version, fetch_many = crate::shelves, local(capacity = 500, ttl = "30s", max_bytes = 1_000_000))]
    pub async fn shelf(ctx: &App, room: String, n: u32) -> Result<Shelf, E> {
        loop {}
    }
}
"#;

/// `book:<isbn>` has the shape of `book:<id>`: the same keys.
const PEOPLE: &str = r#"use cacheme::cache_store;

/// Planted: another store with the key pattern of catalog's `book`.
#[cache_store(key = "book:<isbn>", ttl = "1m")]
pub async fn edition(ctx: &App, isbn: String) -> Result<Edition, E> {
    loop {}
}

#[cache_store(key = "person:<id>", ttl = "1d", prefix = "library", batch = false, local = false)]
pub async fn person(ctx: &App, id: u64) -> Result<Person, E> {
    loop {}
}
"#;

#[test]
fn check_finds_a_duplicate_key_pattern_planted_in_two_files() {
    let project = Project::new(&[
        ("src/lib.rs", LIB),
        ("src/catalog.rs", CATALOG),
        ("src/people.rs", PEOPLE),
    ]);
    let output = project.cacheme().arg("check").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        support::stdout(&output),
        "src/people.rs:4:1: error: stores BookStore (src/catalog.rs:3) and EditionStore (src/people.rs:4) \
         have the same key pattern (\"book:<id>\" and \"book:<isbn>\"): they would read and overwrite each other's values\n\
         1 problem(s) in 3 file(s) (4 valid store(s))\n"
    );
}

/// `foo:<id>:info` with id `list` and `foo:list:<id>` with id `info` are
/// one key; a function version never keeps two stores apart.
#[test]
fn check_finds_overlapping_key_templates_with_a_key_both_write() {
    let info = r#"use cacheme::cache_store;

#[cache_store(key = "foo:<id>:info", ttl = "1m", version = crate::info_version)]
pub async fn info(ctx: &App, id: String) -> Result<Info, E> {
    loop {}
}
"#;
    let list = r#"use cacheme::cache_store;

/// Not the same shape as `foo:<id>:info`, but some of the same keys.
#[cache_store(key = "foo:list:<id>", ttl = "1m", version = 3)]
pub async fn list(ctx: &App, id: String) -> Result<List, E> {
    loop {}
}

/// Like `foo:<id>` in info.rs would be: one segment fewer, no clash.
#[cache_store(key = "foo:<a>:<b>:<c>", ttl = "1m")]
pub async fn triple(ctx: &App, a: u8, b: u8, c: u8) -> Result<List, E> {
    loop {}
}
"#;
    let project = Project::new(&[
        ("src/lib.rs", "mod info;\nmod list;\n"),
        ("src/info.rs", info),
        ("src/list.rs", list),
    ]);
    let output = project.cacheme().arg("check").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        support::stdout(&output),
        "src/list.rs:4:1: error: stores InfoStore (src/info.rs:3) and ListStore (src/list.rs:4) \
         have overlapping key templates (\"foo:<id>:info\" and \"foo:list:<id>\"), both writing the key \"foo:list:info:v3\": \
         they would read and overwrite each other's values\n\
         1 problem(s) in 3 file(s) (3 valid store(s))\n"
    );

    // Another literal in the last segment: no key in common, check passes.
    let project = Project::new(&[
        ("src/lib.rs", "mod info;\nmod list;\n"),
        ("src/info.rs", info),
        ("src/list.rs", &list.replace("foo:list:<id>", "foo:<id>:list")),
    ]);
    project
        .cacheme()
        .arg("check")
        .assert()
        .code(0)
        .stdout("ok: 3 store(s) in 3 file(s), no problems\n");
}

#[test]
fn check_finds_the_same_name_and_passes_a_clean_crate() {
    let renamed = PEOPLE.replace(
        r#"key = "book:<isbn>""#,
        r#"key = "edition:<isbn>", name = "BookStore""#,
    );
    let project = Project::new(&[
        ("src/lib.rs", LIB),
        ("src/catalog.rs", CATALOG),
        ("src/people.rs", &renamed),
    ]);
    project.cacheme().arg("check").assert().code(1).stdout(predicate::str::contains(
        "src/people.rs:4:1: error: stores BookStore (src/catalog.rs:3) and BookStore (src/people.rs:4) have the same name \"BookStore\"",
    ));

    let clean = PEOPLE.replace("book:<isbn>", "edition:<isbn>");
    let project = Project::new(&[
        ("src/lib.rs", LIB),
        ("src/catalog.rs", CATALOG),
        ("src/people.rs", &clean),
    ]);
    project
        .cacheme()
        .arg("check")
        .assert()
        .success()
        .stdout("ok: 4 store(s) in 3 file(s), no problems\n");
}

#[test]
fn stores_that_differ_only_by_prefix_do_not_clash() {
    let lib = r#"
#[cache_store(key = "user:<id>", ttl = "5m")]
async fn user(ctx: &App, id: u64) -> Result<U, E> { loop {} }
#[cache_store(key = "user:<id>", ttl = "5m", prefix = "admin")]
async fn admin(ctx: &App, id: u64) -> Result<U, E> { loop {} }
"#;
    Project::new(&[("src/lib.rs", lib)])
        .cacheme()
        .arg("check")
        .assert()
        .success();
}

/// Every trybuild case of the macro, run through `check`: it reports the
/// same messages at the same line and column as the compiler's .stderr
/// (cases whose only error is rustc's own type check have no macro error,
/// and `check` passes them).
#[test]
fn check_reports_what_the_compiler_reports_for_every_ui_case() {
    let ui = support::workspace().join("tests/ui");
    let mut cases: Vec<_> = std::fs::read_dir(&ui)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "the ui cases are at {}", ui.display());
    for case in cases {
        let source = std::fs::read_to_string(&case).unwrap();
        let stderr = std::fs::read_to_string(case.with_extension("stderr")).unwrap();
        let mut expected = Vec::new();
        let mut lines = stderr.lines().peekable();
        while let Some(line) = lines.next() {
            let (Some(message), Some(place)) = (line.strip_prefix("error: "), lines.peek()) else {
                continue;
            };
            let position = place.rsplit(".rs:").next().unwrap();
            expected.push(format!("src/lib.rs:{position}: error: {message}"));
        }
        let project = Project::new(&[("src/lib.rs", &source)]);
        let output = project.cacheme().arg("check").output().unwrap();
        let reported: Vec<String> = support::stdout(&output)
            .lines()
            .filter(|l| l.contains(": error: "))
            .map(str::to_owned)
            .collect();
        assert_eq!(reported, expected, "{}", case.display());
        assert_eq!(output.status.success(), expected.is_empty(), "{}", case.display());
    }
}

#[test]
fn list_shows_every_store_as_a_table() {
    let clean = PEOPLE.replace("book:<isbn>", "edition:<isbn>");
    let project = Project::new(&[
        ("src/lib.rs", LIB),
        ("src/catalog.rs", CATALOG),
        ("src/people.rs", &clean),
    ]);
    // `local` alone serves for the store's TTL, with the default capacity;
    // `local = false` says the store never has a tier.
    project.cacheme().arg("list").assert().success().stdout(
        "STORE         KEY                       TTL    VERSION                  OPTIONS                                                                                                   LOCATION\n\
         BookStore     book:<id>                 5m     2                        singleflight, local(capacity=10000, ttl=5m), codec=json                                                   src/catalog.rs:3\n\
         ShelfStore    library:shelf:<room>:<n>  1h30m  fn crate::shelf_version  local(capacity=500, ttl=30s, max_bytes=1000000), ttl_jitter=10%, lock_ttl=10s, fetch_many=crate::shelves  src/catalog.rs:9\n\
         EditionStore  edition:<isbn>            1m     1                        -                                                                                                         src/people.rs:4\n\
         PersonStore   library:person:<id>       1d     1                        local=false, no batching                                                                                  src/people.rs:9\n",
    );
}

#[test]
fn list_as_json() {
    let project = Project::new(&[
        ("src/lib.rs", LIB),
        ("src/catalog.rs", CATALOG),
        ("src/people.rs", PEOPLE),
    ]);
    let output = project.cacheme().args(["list", "--format", "json"]).output().unwrap();
    // The planted duplicate: every store is listed, and the exit code is
    // 1 as `check`'s is.
    assert_eq!(output.status.code(), Some(1));
    assert!(support::stderr(&output).contains("the same key pattern"));
    let stores: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(stores.as_array().unwrap().len(), 4);
    assert_eq!(
        stores[0],
        serde_json::json!({
            "name": "BookStore", "fetcher": "book", "key": "book:<id>", "variables": ["id"],
            "ttl": "5m", "ttl_ms": 300_000, "version": "2", "version_fn": null,
            "singleflight": true, "local": { "capacity": 10_000, "ttl": "5m", "ttl_ms": 300_000, "max_bytes": null }, "codec": "json", "ttl_jitter": null, "lock_ttl_ms": null, "fetch_many": null, "batch": true,
            "file": "src/catalog.rs", "line": 3,
        })
    );
    assert_eq!(stores[1]["key"], "library:shelf:<room>:<n>");
    assert_eq!(stores[1]["variables"], serde_json::json!(["room", "n"]));
    assert_eq!(stores[1]["version"], serde_json::Value::Null);
    assert_eq!(stores[1]["version_fn"], "crate::shelf_version");
    assert_eq!(stores[1]["lock_ttl_ms"], 10_000);
    assert_eq!(stores[1]["ttl_jitter"], "10%");
    assert_eq!(stores[1]["fetch_many"], "crate::shelves");
    assert_eq!(
        stores[1]["local"],
        serde_json::json!({ "capacity": 500, "ttl": "30s", "ttl_ms": 30_000, "max_bytes": 1_000_000 })
    );
    // No `local`: the client's default applies; `local = false`: never a tier.
    assert_eq!(stores[2]["local"], serde_json::Value::Null);
    assert_eq!(stores[3]["local"], false);
}

#[test]
fn list_reports_invalid_declarations_and_fails() {
    let broken = CATALOG.replace(r#"ttl = "5m""#, r#"ttl = "5 minutes""#);
    let project = Project::new(&[
        ("src/lib.rs", LIB),
        ("src/catalog.rs", &broken),
        ("src/people.rs", PEOPLE),
    ]);
    project
        .cacheme()
        .arg("list")
        .assert()
        .code(1)
        .stdout(
            predicate::str::contains("BookStore")
                .not()
                .and(predicate::str::contains("EditionStore")),
        )
        .stderr(
            predicate::str::contains("src/catalog.rs:3:40: error: invalid `ttl`")
                .and(predicate::str::contains("1 invalid declaration(s) not listed")),
        );
}
