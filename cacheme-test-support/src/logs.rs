//! Capturing what cacheme logs through `tracing`, for tests that look for a
//! log line, or make sure a secret never reaches one.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing::subscriber::DefaultGuard;

/// Every `tracing` event (all levels) logged on this thread while it
/// lives, as the `fmt` subscriber writes them.
///
/// ```
/// let logs = cacheme_test_support::CapturedLogs::start();
/// tracing::info!(answer = 42, "hello");
/// assert!(logs.text().contains("hello"));
/// ```
pub struct CapturedLogs {
    buffer: Buffer,
    _guard: DefaultGuard,
}

impl CapturedLogs {
    /// Starts capturing on this thread (use a current-thread runtime, the
    /// default of `#[tokio::test]`, so the code under test runs here too).
    pub fn start() -> Self {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        CapturedLogs {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        let bytes = self.buffer.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Panics unless cacheme logged a `connected` line (proof that the
    /// capture works) and neither the logs nor any of `shown` (`Debug` and
    /// `Display` output collected by the test) contains `secret`.
    pub fn assert_secret_hidden(&self, secret: &str, shown: &[String]) {
        let logs = self.text();
        assert!(
            logs.contains("connected"),
            "the test must capture cacheme's logs: {logs}"
        );
        for text in shown.iter().chain([&logs]) {
            assert!(!text.contains(secret), "a secret leaked into: {text}");
        }
    }
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
