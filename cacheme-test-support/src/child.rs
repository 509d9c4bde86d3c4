//! Other processes for tests that need several: the running test run again
//! in a new process of the same test binary, told by its environment that it
//! is the child and what to do.
//!
//! A multi-process test begins by asking whether it is the child:
//!
//! ```ignore
//! #[tokio::test]
//! async fn four_processes_fetch_once() {
//!     if child::is_child() {
//!         return child_work().await; // what each other process does
//!     }
//!     let child = child::this_test_again().env("WHAT", "...").spawn().unwrap();
//!     child::expect_success(child).await;
//!     // ...assertions on what the children did
//! }
//! ```
//!
//! So no test of the suite is a child's entry point that passes by doing
//! nothing when it is run on its own: every test run on its own is a parent
//! and asserts.

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long [`expect_success`] waits for a child.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// Set in a child's environment: the test it runs is the child's part.
const CHILD: &str = "CACHEME_TEST_CHILD";

/// Whether this process is a child started by [`this_test_again`].
pub fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// A command that runs the calling test again, alone, in a new process of
/// this test binary, as a child ([`is_child`] is true there): output
/// captured, killed if dropped. Add the environment, then `spawn()`.
///
/// # Panics
///
/// Unless called on the test's own thread, which libtest and nextest name
/// after the test (a tokio test's body runs there; a spawned task does not).
pub fn this_test_again() -> tokio::process::Command {
    let thread = std::thread::current();
    let test = thread
        .name()
        .filter(|name| *name != "main" && !name.starts_with("tokio-"))
        .expect("this_test_again is called on the test's own thread, named after the test");
    let mut command = tokio::process::Command::new(std::env::current_exe().expect("the test binary's path"));
    command
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Waits for a child (at most two minutes) and fails the test with its
/// output unless it succeeded.
pub async fn expect_success(child: tokio::process::Child) {
    let output = tokio::time::timeout(CHILD_TIMEOUT, child.wait_with_output())
        .await
        .expect("the child process did not finish within 120 s")
        .expect("the child process's output");
    assert!(
        output.status.success(),
        "a child process failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Milliseconds since the Unix epoch: a moment several processes agree on.
pub fn unix_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970");
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// Sleeps until [`unix_ms`] reaches `at` (so processes start together).
pub async fn sleep_until_unix_ms(at: u64) {
    tokio::time::sleep(Duration::from_millis(at.saturating_sub(unix_ms()))).await;
}
