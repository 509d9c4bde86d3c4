//! Load for fault tests: many tasks calling one async operation in a loop
//! while the test breaks and repairs a server, every call timed and
//! checked, and a report per phase of the run.
//!
//! The test names the phases as it goes ([`Load::phase`]); a call belongs
//! to the phase in which it started. Fetches are counted by the test's own
//! source (a shared counter), read at every phase change. Percentiles are
//! computed over the sorted latencies, nearest rank.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What one call gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The value the source would give.
    Right,
    /// Another value (what it was).
    Wrong(String),
    /// An error returned to the caller (its text).
    Error(String),
}

/// How to run a [`Load`].
#[derive(Clone, Debug)]
pub struct LoadSettings {
    /// Concurrent tasks.
    pub tasks: usize,
    /// The pause of a task between two calls.
    pub pause: Duration,
    /// A call running longer is dropped and counted as stuck.
    pub stuck_after: Duration,
}

/// One call, as recorded.
#[derive(Clone, Debug)]
struct Call {
    started: Instant,
    latency: Duration,
    /// Whether the probe said "degraded" when the call started.
    degraded: bool,
    outcome: Option<Outcome>,
}

/// A phase change: from `at`, calls belong to `name`.
#[derive(Clone, Debug)]
struct Mark {
    name: String,
    at: Instant,
    fetches: u64,
}

/// A running load (see the module docs).
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<Call>>>,
    marks: Mutex<Vec<Mark>>,
    fetches: Arc<AtomicU64>,
}

impl Load {
    /// Starts `settings.tasks` tasks, each calling `call(task, n)` for its
    /// `n`th call until [`finish`](Load::finish), in a first phase called
    /// `first`. `degraded` is asked before every call (e.g.
    /// `Client::is_degraded`); `fetches` is the source's fetch counter.
    pub fn start<C, Fut, D>(settings: &LoadSettings, first: &str, fetches: Arc<AtomicU64>, degraded: D, call: C) -> Load
    where
        C: Fn(usize, u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
        D: Fn() -> bool + Send + Sync + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let (call, degraded) = (Arc::new(call), Arc::new(degraded));
        let marks = Mutex::new(vec![Mark {
            name: first.to_owned(),
            at: Instant::now(),
            fetches: fetches.load(Ordering::SeqCst),
        }]);
        let tasks = (0..settings.tasks)
            .map(|task| {
                let (stop, call, degraded) = (stop.clone(), call.clone(), degraded.clone());
                let settings = settings.clone();
                tokio::spawn(async move {
                    let mut calls = Vec::new();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let degraded = degraded();
                        let started = Instant::now();
                        let outcome = tokio::time::timeout(settings.stuck_after, call(task, n)).await.ok();
                        calls.push(Call {
                            started,
                            latency: started.elapsed(),
                            degraded,
                            outcome,
                        });
                        n += 1;
                        tokio::time::sleep(settings.pause).await;
                    }
                    calls
                })
            })
            .collect();
        Load {
            stop,
            tasks,
            marks,
            fetches,
        }
    }

    /// Calls starting from now belong to phase `name`.
    pub fn phase(&self, name: &str) {
        let mark = Mark {
            name: name.to_owned(),
            at: Instant::now(),
            fetches: self.fetches.load(Ordering::SeqCst),
        };
        self.marks.lock().unwrap_or_else(|p| p.into_inner()).push(mark);
    }

    /// Stops the tasks (each finishes its call in progress, at most
    /// `stuck_after`) and reports.
    pub async fn finish(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let ended = Instant::now();
        let mut calls = Vec::new();
        for task in self.tasks {
            calls.extend(task.await.expect("a load task panicked"));
        }
        let mut marks = self.marks.into_inner().unwrap_or_else(|p| p.into_inner());
        marks.push(Mark {
            name: String::new(),
            at: ended,
            fetches: self.fetches.load(Ordering::SeqCst),
        });
        let phases = marks
            .windows(2)
            .map(|pair| {
                let (from, to) = (&pair[0], &pair[1]);
                let within: Vec<&Call> = calls
                    .iter()
                    .filter(|c| c.started >= from.at && (c.started < to.at || to.name.is_empty()))
                    .collect();
                let mut stats = Stats::of(&from.name, &within);
                stats.fetches = Some(to.fetches - from.fetches);
                stats.seconds = (to.at - from.at).as_secs_f64();
                stats
            })
            .collect();
        let degraded: Vec<&Call> = calls.iter().filter(|c| c.degraded).collect();
        let all: Vec<&Call> = calls.iter().collect();
        let mut total = Stats::of("whole run", &all);
        total.fetches = Some(marks.last().map_or(0, |m| m.fetches) - marks[0].fetches);
        total.seconds = (ended - marks[0].at).as_secs_f64();
        Report {
            phases,
            degraded: Stats::of("breaker open", &degraded),
            total,
        }
    }
}

/// The calls of one phase (or of the whole run, or those made while the
/// breaker was open).
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// The phase's name.
    pub name: String,
    /// Calls started in the phase.
    pub calls: usize,
    /// Calls that returned an error.
    pub errors: usize,
    /// Calls that returned a value other than the source's.
    pub wrong: usize,
    /// Calls that had not returned after `stuck_after` (dropped).
    pub stuck: usize,
    /// Median latency (stuck calls count as `stuck_after`).
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// The slowest call.
    pub max: Duration,
    /// Source fetches during the phase (`None` where not attributable).
    pub fetches: Option<u64>,
    /// The phase's length.
    pub seconds: f64,
    /// The first error and the first wrong value seen, for messages.
    pub examples: Vec<String>,
}

impl Stats {
    fn of(name: &str, calls: &[&Call]) -> Stats {
        let mut latencies: Vec<Duration> = calls.iter().map(|c| c.latency).collect();
        latencies.sort_unstable();
        let count = |f: fn(&Option<Outcome>) -> bool| calls.iter().filter(|c| f(&c.outcome)).count();
        let mut examples = Vec::new();
        let error = calls.iter().find_map(|c| match &c.outcome {
            Some(Outcome::Error(e)) => Some(format!("error: {e}")),
            _ => None,
        });
        let wrong = calls.iter().find_map(|c| match &c.outcome {
            Some(Outcome::Wrong(v)) => Some(format!("wrong value: {v}")),
            _ => None,
        });
        examples.extend(error.into_iter().chain(wrong));
        Stats {
            name: name.to_owned(),
            calls: calls.len(),
            errors: count(|o| matches!(o, Some(Outcome::Error(_)))),
            wrong: count(|o| matches!(o, Some(Outcome::Wrong(_)))),
            stuck: count(Option::is_none),
            p50: percentile(&latencies, 50),
            p99: percentile(&latencies, 99),
            max: latencies.last().copied().unwrap_or_default(),
            fetches: None,
            seconds: 0.0,
            examples,
        }
    }

    /// Fetches per second over the phase.
    pub fn fetch_rate(&self) -> f64 {
        self.fetches.unwrap_or(0) as f64 / self.seconds.max(f64::EPSILON)
    }
}

/// The `percent`th percentile (nearest rank) of sorted latencies; zero for
/// none.
pub fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// What a [`Load`] measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// Each phase, in order.
    pub phases: Vec<Stats>,
    /// The calls that started while the breaker was open, whatever the
    /// phase (no fetch count: fetches are not attributable to them).
    pub degraded: Stats,
    /// Every call.
    pub total: Stats,
}

impl Report {
    /// The phase called `name`. Panics if there is none.
    pub fn phase(&self, name: &str) -> &Stats {
        self.phases
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no phase {name:?} in the report"))
    }

    /// The report as a table, under `title`.
    pub fn table(&self, title: &str) -> String {
        let mut out = format!("\n== {title}\n");
        let _ = writeln!(
            out,
            "{:<14} {:>6} {:>7} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9} {:>8} {:>8}",
            "phase", "secs", "calls", "errors", "wrong", "stuck", "p50", "p99", "max", "fetches", "fetch/s"
        );
        for stats in self.phases.iter().chain([&self.degraded, &self.total]) {
            let fetches = stats.fetches.map_or("-".to_owned(), |f| f.to_string());
            let rate = match stats.fetches {
                Some(_) => format!("{:.0}", stats.fetch_rate()),
                None => "-".to_owned(),
            };
            let secs = match stats.fetches {
                Some(_) => format!("{:.1}", stats.seconds),
                None => "-".to_owned(),
            };
            let _ = writeln!(
                out,
                "{:<14} {:>6} {:>7} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9} {:>8} {:>8}",
                stats.name,
                secs,
                stats.calls,
                stats.errors,
                stats.wrong,
                stats.stuck,
                ms(stats.p50),
                ms(stats.p99),
                ms(stats.max),
                fetches,
                rate
            );
            for example in &stats.examples {
                let _ = writeln!(out, "    {example}");
            }
        }
        out
    }
}

/// `12.3ms`.
fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 50), Duration::from_millis(50));
        assert_eq!(percentile(&sorted, 99), Duration::from_millis(99));
        assert_eq!(percentile(&sorted, 100), Duration::from_millis(100));
        assert_eq!(percentile(&sorted[..1], 99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 99), Duration::ZERO);
    }
}
