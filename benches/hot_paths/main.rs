//! The hot-path benchmark. Run it with `scripts/bench` (or
//! `cargo bench --bench hot_paths -- [--quick] [--rounds N] [FILTER...]`);
//! BENCHMARKS.md records a run and explains the numbers.
//!
//! Every scenario measures its contenders side by side in one process, in
//! interleaved rounds, and reports medians and ratios to a baseline
//! ([`harness::compare`]): ratios measured together survive a noisy machine,
//! absolute times taken apart do not.
//!
//! # Adding a scenario
//!
//! 1. Write `pub async fn name(settings: &Settings) -> Report` in
//!    `scenarios.rs` (or a new module). For a comparison, build the
//!    fixtures (`App::memory()`, `App::redis()`), pass [`harness::contender`]s
//!    to [`harness::compare`] with the baseline first, and render with
//!    [`harness::ratio_table`]. For other numbers (latency percentiles of a
//!    stampede, say), collect samples, use [`harness::percentile`] and fill
//!    a [`harness::Table`] yourself.
//! 2. Add `"name" => module::name` to `scenarios!` below.

mod faults;
mod fixtures;
mod harness;
mod observe;
mod scenarios;
mod seed;
mod stampede;

use std::process::ExitCode;
use std::time::Instant;

use harness::{Report, Settings};

/// The scenarios, in the order they run: `"name" => async fn(&Settings) -> Report`.
macro_rules! scenarios {
    ($($name:literal => $run:path),* $(,)?) => {
        const SCENARIOS: &[&str] = &[$($name),*];

        async fn run(name: &str, settings: &Settings) -> Report {
            match name {
                $($name => $run(settings).await,)*
                _ => unreachable!("{name} is not in SCENARIOS"),
            }
        }
    };
}

scenarios! {
    "key" => scenarios::key,
    "codec" => scenarios::codec,
    "memory-get" => scenarios::memory_get,
    "redis-get" => scenarios::redis_get,
    "redis-get-64" => scenarios::redis_get_64,
    "redis-get-m" => scenarios::redis_get_m,
    "cold-key" => stampede::cold_key,
    "dead-cache" => faults::dead_cache,
    "seed-redis" => seed::seed_redis,
    "seed-cluster" => seed::seed_cluster,
    "seed-memory" => seed::seed_memory,
    "metrics-memory-get" => observe::metrics_memory_get,
    "metrics-redis-get" => observe::metrics_redis_get,
}

const USAGE: &str = "\
usage: scripts/bench [--quick] [--rounds N] [--list] [FILTER...]

Runs the scenarios whose name contains any FILTER (all without one) and
prints a Markdown table per scenario.

  --quick     CI-sized: 5 rounds of ~10 ms (a smoke test, not a record)
  --rounds N  measured rounds per scenario (default 15, of ~100 ms)
  --list      print the scenario names and exit";

fn main() -> ExitCode {
    let mut settings = Settings::full();
    let mut rounds = None;
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // `cargo bench` passes `--bench` to every bench binary.
            "--bench" => {}
            "--quick" => settings = Settings::quick(),
            "--rounds" => match args.next().and_then(|n| n.parse().ok()).filter(|&n: &usize| n > 0) {
                Some(n) => rounds = Some(n),
                None => return usage("--rounds needs a positive number"),
            },
            "--list" => {
                SCENARIOS.iter().for_each(|name| println!("{name}"));
                return ExitCode::SUCCESS;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            flag if flag.starts_with('-') => return usage(&format!("unknown option {flag}")),
            filter => filters.push(filter.to_owned()),
        }
    }
    settings.rounds = rounds.unwrap_or(settings.rounds);
    let chosen: Vec<&str> = SCENARIOS
        .iter()
        .copied()
        .filter(|name| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    if chosen.is_empty() {
        return usage(&format!("no scenario matches {filters:?}"));
    }

    // Two workers, like a small service: the Redis scenarios' connections
    // run their I/O on them while the measuring loop runs on this thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "cacheme hot paths: {} rounds of ~{} ms per scenario, {cores} cores available\n",
        settings.rounds,
        settings.round_time.as_millis()
    );
    let started = Instant::now();
    for name in chosen {
        eprintln!("bench: {name}...");
        let report = runtime.block_on(run(name, &settings));
        println!("{report}");
    }
    eprintln!("bench: done in {:.1?}", started.elapsed());
    ExitCode::SUCCESS
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("bench: {problem}\n\n{USAGE}");
    ExitCode::from(2)
}
