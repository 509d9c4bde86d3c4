//! The measuring half of the benchmark: contenders of one scenario run side
//! by side in interleaved rounds, and are reported as medians and ratios.
//!
//! Why this shape: the machine is shared and noisy, so two numbers taken a
//! minute apart do not compare. Every contender runs once per round, in an
//! order that rotates round by round, and a contender's ratio to the
//! baseline is the median of its per-round ratios: a burst of noise slows
//! both members of a pair, and the median drops the rounds it hit unevenly.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::LocalBoxFuture;

/// Counts heap allocations while [`COUNTING`] is on, so each contender's
/// allocations per operation are reported next to its time: unlike the
/// time, that number does not move with the machine's load. Off (one
/// relaxed load per allocation) while timing.
struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

// SAFETY: every method forwards to `System` unchanged; counting touches
// only atomics and never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn count() {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

/// How hard to measure (from the command line).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Measured rounds per scenario; each contender runs once per round.
    pub rounds: usize,
    /// What one round of the baseline should take; sets ops per round.
    pub round_time: Duration,
}

impl Settings {
    /// Full runs: what BENCHMARKS.md records.
    pub fn full() -> Self {
        Settings {
            rounds: 15,
            round_time: Duration::from_millis(100),
        }
    }

    /// CI-sized runs (`--quick`): a smoke test of the numbers, not a record.
    pub fn quick() -> Self {
        Settings {
            rounds: 5,
            round_time: Duration::from_millis(10),
        }
    }
}

/// Does `n` operations of one contender.
type Run<'a> = Box<dyn FnMut(u64) -> LocalBoxFuture<'a, ()> + 'a>;

/// One side of a comparison: a name and a way to do `n` operations.
pub struct Contender<'a> {
    name: String,
    run: Run<'a>,
}

/// A contender whose `run(n)` does `n` operations (gets, encodes, ...):
/// the loop lives inside, so timing costs nothing per operation.
pub fn contender<'a, F, Fut>(name: impl Into<String>, mut run: F) -> Contender<'a>
where
    F: FnMut(u64) -> Fut + 'a,
    Fut: Future<Output = ()> + 'a,
{
    Contender {
        name: name.into(),
        run: Box::new(move |n| Box::pin(run(n))),
    }
}

impl Contender<'_> {
    /// Does `n` operations once, untimed (to count what they send).
    pub async fn run(&mut self, n: u64) {
        (self.run)(n).await;
    }
}

/// One contender's result.
#[derive(Clone, Debug)]
pub struct Measured {
    /// The contender's name.
    pub name: String,
    /// Median time per operation, in nanoseconds.
    pub ns: f64,
    /// Interquartile range of the per-round times, as a share of the median.
    pub iqr: f64,
    /// Median of the per-round ratios to the baseline (1 for the baseline).
    pub ratio: f64,
    /// First and third quartile of those ratios.
    pub ratio_q1: f64,
    /// See `ratio_q1`.
    pub ratio_q3: f64,
    /// Heap allocations per operation (reallocations included), counted in
    /// one extra run after the timed rounds.
    pub allocs: f64,
}

/// Measures `contenders` side by side; the first is the baseline.
///
/// The number of operations per round is calibrated on the baseline to
/// take [`Settings::round_time`]; every contender then does that many, so
/// all do the same work (the same keys). Each contender runs once as a
/// warm-up, then [`Settings::rounds`] times, interleaved, then once more
/// with allocations counted.
pub async fn compare(settings: &Settings, mut contenders: Vec<Contender<'_>>) -> Vec<Measured> {
    assert!(!contenders.is_empty(), "compare needs a baseline");
    let n = calibrate(settings.round_time, &mut contenders[0]).await;
    for c in &mut contenders {
        (c.run)(n).await;
    }
    let k = contenders.len();
    let mut samples = vec![Vec::with_capacity(settings.rounds); k];
    for round in 0..settings.rounds {
        for i in (0..k).map(|j| (j + round) % k) {
            let started = Instant::now();
            (contenders[i].run)(n).await;
            samples[i].push(started.elapsed().as_nanos() as f64 / n as f64);
        }
    }
    let mut allocs = Vec::with_capacity(k);
    for c in &mut contenders {
        ALLOCATIONS.store(0, Ordering::Relaxed);
        COUNTING.store(true, Ordering::Relaxed);
        (c.run)(n).await;
        COUNTING.store(false, Ordering::Relaxed);
        allocs.push(ALLOCATIONS.load(Ordering::Relaxed) as f64 / n as f64);
    }
    let baseline = samples[0].clone();
    contenders
        .iter()
        .zip(&samples)
        .zip(allocs)
        .map(|((c, times), allocs)| {
            let mut ratios: Vec<f64> = times.iter().zip(&baseline).map(|(t, b)| t / b).collect();
            let mut times = times.clone();
            let ns = percentile(&mut times, 0.5);
            Measured {
                name: c.name.clone(),
                ns,
                iqr: (percentile(&mut times, 0.75) - percentile(&mut times, 0.25)) / ns,
                ratio: percentile(&mut ratios, 0.5),
                ratio_q1: percentile(&mut ratios, 0.25),
                ratio_q3: percentile(&mut ratios, 0.75),
                allocs,
            }
        })
        .collect()
}

/// How many operations make one round of `baseline` last about `target`.
async fn calibrate(target: Duration, baseline: &mut Contender<'_>) -> u64 {
    let mut n = 1u64;
    loop {
        let started = Instant::now();
        (baseline.run)(n).await;
        let took = started.elapsed();
        if took >= target / 4 || n >= 1 << 40 {
            let scaled = n as f64 * target.as_secs_f64() / took.as_secs_f64().max(1e-9);
            return (scaled.ceil() as u64).max(1);
        }
        n *= 2;
    }
}

/// The `q` quantile (0..=1) of `values`, interpolated; sorts `values`.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    assert!(!values.is_empty(), "percentile of nothing");
    values.sort_by(f64::total_cmp);
    let at = q.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    values[lo] + (values[hi] - values[lo]) * (at - lo as f64)
}

/// A duration in nanoseconds, in the unit that reads best.
pub fn human_ns(ns: f64) -> String {
    match ns {
        ns if ns < 10.0 => format!("{ns:.1} ns"),
        ns if ns < 1e3 => format!("{ns:.0} ns"),
        ns if ns < 1e6 => format!("{:.1} µs", ns / 1e3),
        ns => format!("{:.2} ms", ns / 1e6),
    }
}

/// The usual table of a comparison: time per operation, its spread, and
/// the ratio to the baseline with its interquartile range, allocations.
pub fn ratio_table(measured: &[Measured]) -> Table {
    let mut table = Table::new([
        "contender",
        "time/op (median)",
        "spread (±IQR/2)",
        "ratio (q1–q3)",
        "allocs/op",
    ]);
    for (i, m) in measured.iter().enumerate() {
        let ratio = if i == 0 {
            "1.00 (baseline)".to_owned()
        } else {
            format!("**{:.2}** ({:.2}–{:.2})", m.ratio, m.ratio_q1, m.ratio_q3)
        };
        table.row([
            m.name.clone(),
            human_ns(m.ns),
            format!("±{:.0}%", m.iqr * 50.0),
            ratio,
            format!("{:.1}", m.allocs),
        ]);
    }
    table
}

/// A Markdown table, printed with aligned columns.
#[derive(Clone, Debug)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<const N: usize>(headers: [&str; N]) -> Self {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row (as many cells as headers).
    pub fn row<const N: usize>(&mut self, cells: [String; N]) -> &mut Self {
        assert_eq!(N, self.headers.len(), "a row needs one cell per column");
        self.rows.push(cells.into());
        self
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = |i: usize| {
            self.rows
                .iter()
                .map(|r| r[i].chars().count())
                .chain([self.headers[i].chars().count(), 3])
                .max()
                .unwrap_or(3)
        };
        let widths: Vec<usize> = (0..self.headers.len()).map(width).collect();
        let line = |f: &mut fmt::Formatter<'_>, cells: &[String]| {
            for (cell, w) in cells.iter().zip(&widths) {
                write!(f, "| {cell}{} ", " ".repeat(w - cell.chars().count()))?;
            }
            writeln!(f, "|")
        };
        line(f, &self.headers)?;
        let rules: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(f, &rules)?;
        for row in &self.rows {
            line(f, row)?;
        }
        Ok(())
    }
}

/// What a scenario prints: a title, what its numbers mean, a table.
#[derive(Clone, Debug)]
pub struct Report {
    /// The heading.
    pub title: String,
    /// What is compared and the DESIGN target, if any.
    pub about: String,
    /// The numbers.
    pub table: Table,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "### {}\n\n{}\n\n{}", self.title, self.about, self.table)
    }
}
