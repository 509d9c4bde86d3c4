//! `cargo cacheme init` in fresh `cargo new` projects. The end-to-end
//! test follows the printed next steps literally, then builds and runs
//! the program offline against this workspace, in `target/cli-e2e` so
//! reruns are incremental. The binary under test is built from this
//! checkout, so without `--path` it depends on the checkout.

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

    let checkout = support::workspace().canonicalize().unwrap();
    let dependency = format!("cacheme = {{ path = {:?} }}", checkout.display().to_string());
    cacheme().arg("init").current_dir(&demo).assert().success().stdout(
        predicate::str::contains("created src/cache.rs")
            .and(predicate::str::contains(format!(
                "Cargo.toml: added {dependency} (from the checkout cargo-cacheme was built from)"
            )))
            .and(predicate::str::contains("Next: replace src/main.rs with")),
    );
    let edited = std::fs::read_to_string(&manifest).unwrap();
    assert_eq!(
        edited,
        format!(
            "{commented}{dependency}\nserde = {{ version = \"1\", features = [\"derive\"] }}\n\
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

    // `--force` points an existing dependency at the new source, relative
    // when given relative.
    let version = edited.replace(&dependency, "cacheme = \"0.1\"");
    std::fs::write(&manifest, &version).unwrap();
    cacheme()
        .args(["init", "--path", "."])
        .current_dir(&demo)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no Cargo.toml of the `cacheme` package there"));
    let relative = relative_to(&demo, &checkout);
    cacheme()
        .args(["init", "--force", "--path", &relative])
        .current_dir(&demo)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "Cargo.toml: replaced: cacheme = { path = \"../",
        ));
    let replaced = std::fs::read_to_string(&manifest).unwrap();
    let path = path_dependency(&replaced);
    assert!(path.starts_with("../"), "{replaced}");
    assert_eq!(demo.join(path).canonicalize().unwrap(), checkout);

    cacheme()
        .args(["init", "--path", "/nonexistent"])
        .current_dir(&demo)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no Cargo.toml of the `cacheme` package there"));
}

/// `to` spelled relative to `from` through the root (`../../to`), as a
/// user might type it; init shortens it.
fn relative_to(from: &Path, to: &Path) -> String {
    let from = from.canonicalize().unwrap();
    let ups = from.components().count() - 1;
    format!(
        "{}{}",
        "../".repeat(ups),
        to.display().to_string().trim_start_matches('/')
    )
}

/// The `path` of the `cacheme` dependency in a manifest.
fn path_dependency(manifest: &str) -> &str {
    let line = manifest.lines().find(|line| line.starts_with("cacheme = ")).unwrap();
    line.split('"').nth(1).unwrap()
}

/// The `src/main.rs` that init's printed next steps say to write: the
/// indented block after "Next: replace src/main.rs with".
fn printed_main(stdout: &str) -> String {
    let after = stdout
        .split_once("Next: replace src/main.rs with\n")
        .expect("init prints the file")
        .1;
    let block: Vec<&str> = after
        .lines()
        .take_while(|line| line.is_empty() || line.starts_with("    "))
        .map(|line| line.strip_prefix("    ").unwrap_or(line))
        .collect();
    format!("{}\n", block.join("\n").trim())
}

/// The proof of `init`: the generated module compiles in a new project,
/// its example store caches (one fetch for two gets, and none at all in a
/// second process sharing a Redis), and the other commands see it.
#[test]
fn init_makes_a_project_that_builds_offline_and_caches() {
    let workspace = support::workspace();
    let parent = tempfile::tempdir().unwrap();
    let demo = cargo_new(parent.path());
    // A newcomer in a fresh project, with a checkout next door: init with a
    // relative --path, then exactly the printed steps.
    let relative = relative_to(&demo, &workspace);
    let output = cacheme()
        .args(["init", "--path", &relative])
        .current_dir(&demo)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", support::stderr(&output));
    let printed = support::stdout(&output);
    assert!(
        printed.contains("Then run it: `cargo run` prints \"Hello, world!\""),
        "{printed}"
    );
    let manifest = std::fs::read_to_string(demo.join("Cargo.toml")).unwrap();
    let path = path_dependency(&manifest);
    assert!(path.starts_with("../"), "a relative path: {manifest}");
    assert_eq!(
        demo.join(path).canonicalize().unwrap(),
        workspace.canonicalize().unwrap()
    );
    std::fs::write(demo.join("src/main.rs"), printed_main(&printed)).unwrap();
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
    assert_eq!(run(None), "Hello, world!\n", "the printed program runs");

    // Then the user's own program: the fetch count shows what was cached.
    std::fs::write(demo.join("src/main.rs"), MAIN).unwrap();
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

    // The program init prints, as written, builds without a warning.
    std::fs::write(demo.join("src/main.rs"), printed_main(&printed)).unwrap();
    let build = Command::new(cargo())
        .args(["build", "--offline"])
        .current_dir(&demo)
        .env("CARGO_TARGET_DIR", workspace.join("target/cli-e2e"))
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", support::stderr(&build));
    assert!(
        !support::stderr(&build).contains("warning"),
        "init's printed program builds without a warning:\n{}",
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
