//! `cargo cacheme init` in fresh `cargo new` projects. The end-to-end
//! test builds and runs the generated program offline against this
//! workspace, in `target/cli-e2e` so reruns are incremental.

mod support;

use std::path::Path;
use std::process::Command;

use cacheme_test_support::RedisServer;
use predicates::prelude::*;
use support::cacheme;

/// `cargo new --bin demo` in a temp dir; the project's directory.
fn cargo_new(parent: &Path) -> std::path::PathBuf {
    let status = Command::new(cargo())
        .args(["new", "--bin", "--vcs", "none", "--offline", "demo"])
        .current_dir(parent)
        .status()
        .unwrap();
    assert!(status.success(), "cargo new");
    parent.join("demo")
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// The program a user writes after init: the printed next step, plus the
/// fetch count so the test sees what was cached.
const MAIN: &str = r#"mod cache;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = cache::App::from_env().await?;
    let first = cache::GreetingStore::get(&app, "world".to_owned()).await?;
    let second = cache::GreetingStore::get(&app, "world".to_owned()).await?;
    assert_eq!(first, second);
    println!("{} fetches={}", second.text, app.fetches());
    Ok(())
}
"#;

#[test]
fn init_refuses_to_overwrite_and_keeps_the_manifest_as_written() {
    let parent = tempfile::tempdir().unwrap();
    let demo = cargo_new(parent.path());
    let manifest = demo.join("Cargo.toml");
    let original = std::fs::read_to_string(&manifest).unwrap();
    let commented = original.replace("[dependencies]", "# What we use.\n[dependencies] # (none yet)");
    std::fs::write(&manifest, &commented).unwrap();

    cacheme().arg("init").current_dir(&demo).assert().success().stdout(
        predicate::str::contains("created src/cache.rs")
            .and(predicate::str::contains("Cargo.toml: added cacheme = \"0.1\""))
            .and(predicate::str::contains("Next: add `mod cache;` to src/main.rs")),
    );
    let edited = std::fs::read_to_string(&manifest).unwrap();
    assert_eq!(
        edited,
        format!(
            "{commented}cacheme = \"0.1\"\nserde = {{ version = \"1\", features = [\"derive\"] }}\n\
             tokio = {{ version = \"1\", features = [\"macros\", \"rt-multi-thread\"] }}\n"
        )
    );
    let module = demo.join("src/cache.rs");
    std::fs::write(&module, "// mine\n").unwrap();
    cacheme()
        .arg("init")
        .current_dir(&demo)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "src/cache.rs already exists; pass --force to overwrite it",
        ));
    assert_eq!(std::fs::read_to_string(&module).unwrap(), "// mine\n");
    cacheme()
        .args(["init", "--force"])
        .current_dir(&demo)
        .assert()
        .success()
        .stdout(predicate::str::contains("kept cacheme (already there)"));
    assert!(std::fs::read_to_string(&module).unwrap().contains("#[cache_store("));
    assert_eq!(
        std::fs::read_to_string(&manifest).unwrap(),
        edited,
        "nothing more to add"
    );

    cacheme()
        .args(["init", "--path", "/nonexistent"])
        .current_dir(&demo)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no Cargo.toml of the `cacheme` package there"));
}

/// The proof of `init`: the generated module compiles in a new project,
/// its example store caches (one fetch for two gets, and none at all in a
/// second process sharing a Redis), and the other commands see it.
#[test]
fn init_makes_a_project_that_builds_offline_and_caches() {
    let workspace = support::workspace();
    let parent = tempfile::tempdir().unwrap();
    let demo = cargo_new(parent.path());
    let init_output = cacheme()
        .args(["init", "--path"])
        .arg(&workspace)
        .current_dir(&demo)
        .output()
        .unwrap();
    assert!(init_output.status.success(), "{}", support::stderr(&init_output));
    let manifest = std::fs::read_to_string(demo.join("Cargo.toml")).unwrap();
    let path = workspace.canonicalize().unwrap();
    assert!(
        manifest.contains(&format!("cacheme = {{ path = \"{}\" }}", path.display())),
        "{manifest}"
    );
    std::fs::write(demo.join("src/main.rs"), MAIN).unwrap();
    // The workspace's lock: the same versions, all in the local registry cache.
    std::fs::copy(workspace.join("Cargo.lock"), demo.join("Cargo.lock")).unwrap();

    let run = |url: Option<&str>| {
        let mut cmd = Command::new(cargo());
        cmd.args(["run", "--offline", "--quiet"])
            .current_dir(&demo)
            .env("CARGO_TARGET_DIR", workspace.join("target/cli-e2e"))
            .env_remove("CACHEME_URL");
        if let Some(url) = url {
            cmd.env("CACHEME_URL", url);
        }
        let output = cmd.output().unwrap();
        assert!(output.status.success(), "{}", support::stderr(&output));
        support::stdout(&output)
    };
    assert_eq!(
        run(None),
        "Hello, world! fetches=1\n",
        "memory by default: two gets, one fetch"
    );

    let server = RedisServer::start();
    let url = server.url();
    assert_eq!(run(Some(&url)), "Hello, world! fetches=1\n");
    assert_eq!(
        run(Some(&url)),
        "Hello, world! fetches=0\n",
        "a second process reads the cached value"
    );

    // The next step init prints, as written, builds without a warning.
    let printed = support::stdout(&init_output);
    let example: String = printed
        .split_once("e.g.\n\n")
        .expect("init prints an example")
        .1
        .lines()
        .take_while(|line| !line.is_empty())
        .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
        .collect();
    std::fs::write(demo.join("src/main.rs"), format!("mod cache;\n\n{example}")).unwrap();
    let build = Command::new(cargo())
        .args(["build", "--offline"])
        .current_dir(&demo)
        .env("CARGO_TARGET_DIR", workspace.join("target/cli-e2e"))
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", support::stderr(&build));
    assert!(
        !support::stderr(&build).contains("warning"),
        "init's next step builds without a warning:\n{}",
        support::stderr(&build)
    );
    std::fs::write(demo.join("src/main.rs"), MAIN).unwrap();

    cacheme().arg("check").current_dir(&demo).assert().success();
    cacheme()
        .arg("list")
        .current_dir(&demo)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "GreetingStore  greeting:<name>  5m   1        codec=json  src/cache.rs:",
        ));
    cacheme()
        .args(["get", "--store", "GreetingStore", "world", "--url", &url])
        .current_dir(&demo)
        .assert()
        .success()
        .stdout(predicate::str::contains("\"text\": \"Hello, world!\""));
    cacheme()
        .args(["invalidate", "--store", "GreetingStore", "world", "--url", &url])
        .current_dir(&demo)
        .assert()
        .success();
    assert_eq!(
        run(Some(&url)),
        "Hello, world! fetches=1\n",
        "invalidated: fetched again"
    );
}
