//! Other processes for tests that need several: the running test binary
//! started again on one of its tests (a "child worker" that does nothing
//! when run as an ordinary test), told what to do through environment
//! variables.

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long [`expect_success`] waits for a child.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// A command that runs only `test` of this test binary, output captured,
/// killed if dropped. Add the environment, then `spawn()`.
pub fn this_test(test: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(std::env::current_exe().expect("the test binary's path"));
    command
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
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
