//! The cost of metrics (feature `metrics`, issue 16): a typed get hit with
//! the client's metrics off, side by side with the same get on a client
//! recording them into an installed Prometheus recorder
//! (`metrics-exporter-prometheus`, as docs/observability.md shows). Target:
//! at most 5% more. `scripts/bench` builds with `--features metrics`; the
//! other scenarios' clients have metrics off.

#[cfg(not(feature = "metrics"))]
use crate::harness::Table;
use crate::harness::{Report, Settings};

#[cfg(feature = "metrics")]
mod measured {
    use std::hint::black_box;

    use crate::fixtures::{App, BookStore, CATEGORY, KEYS};
    use crate::harness::{Report, Settings, compare, contender, ratio_table};

    /// Installs a Prometheus recorder as the global one (once); its handle.
    fn install_prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
        static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> = std::sync::OnceLock::new();
        HANDLE.get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).expect("the metrics scenarios install the only recorder");
            handle
        })
    }

    /// Panics unless the metered client's gets reached the recorder: the
    /// scenario measured recording, not a client that records nothing.
    fn assert_recorded(prometheus: &metrics_exporter_prometheus::PrometheusHandle) {
        let text = prometheus.render();
        for name in ["cacheme_gets", "cacheme_hits", "cacheme_operation_duration"] {
            assert!(
                text.lines()
                    .any(|line| line.starts_with(name) && line.contains("BookStore")),
                "the recorder holds no {name} of BookStore:\n{text}"
            );
        }
    }

    /// Gets of every warm key, round robin, off and on.
    async fn off_and_on(settings: &Settings, off: &App, on: &App) -> Vec<crate::harness::Measured> {
        compare(
            settings,
            vec![
                contender("BookStore::get, metrics off", move |n| async move {
                    for i in 0..n {
                        black_box(BookStore::get(off, CATEGORY, i % KEYS).await.unwrap());
                    }
                }),
                contender(
                    "BookStore::get, metrics on (Prometheus recorder)",
                    move |n| async move {
                        for i in 0..n {
                            black_box(BookStore::get(on, CATEGORY, i % KEYS).await.unwrap());
                        }
                    },
                ),
            ],
        )
        .await
    }

    pub async fn memory(settings: &Settings) -> Report {
        let prometheus = install_prometheus();
        let off = &App::memory().await;
        let on = &App::memory_metered().await;
        let measured = off_and_on(settings, off, on).await;
        off.assert_all_hits();
        on.assert_all_hits();
        assert_recorded(prometheus);
        Report {
            title: "metrics-memory-get: typed memory hit, metrics off vs on".into(),
            about: format!(
                "{KEYS} warm keys, one get at a time, on two memory clients: one with \
                 `ClientBuilder::metrics(false)`, one recording into an installed Prometheus recorder \
                 (counters, the outcome histogram). Target (issue 16): at most 5% more."
            ),
            table: ratio_table(&measured),
        }
    }

    pub async fn redis(settings: &Settings) -> Report {
        let prometheus = install_prometheus();
        let off = &App::redis().await;
        let on = &off.metered_twin().await;
        let measured = off_and_on(settings, off, on).await;
        off.assert_all_hits();
        assert_eq!(on.fetches(), 0, "a measured get missed");
        assert_recorded(prometheus);
        Report {
            title: "metrics-redis-get: typed Redis hit, metrics off vs on".into(),
            about: format!(
                "{KEYS} warm keys, one get at a time, two clients on one redis-server: one with \
                 `ClientBuilder::metrics(false)` on a `Cache::without_metrics()`, one recording into an \
                 installed Prometheus recorder (the store's metrics and each GET's \
                 `cacheme.backend.operation.duration`). Target (issue 16): at most 5% more."
            ),
            table: ratio_table(&measured),
        }
    }
}

/// What a metrics scenario says in a build without the feature.
#[cfg(not(feature = "metrics"))]
fn skipped(name: &str) -> Report {
    let mut table = Table::new(["note"]);
    table.row(["not measured: build with `--features metrics` (scripts/bench does)".to_owned()]);
    Report {
        title: format!("{name}: skipped"),
        about: String::new(),
        table,
    }
}

/// Typed memory hits with metrics off and on.
pub async fn metrics_memory_get(settings: &Settings) -> Report {
    #[cfg(feature = "metrics")]
    return measured::memory(settings).await;
    #[cfg(not(feature = "metrics"))]
    {
        let _ = settings;
        skipped("metrics-memory-get")
    }
}

/// Typed Redis hits with metrics off and on.
pub async fn metrics_redis_get(settings: &Settings) -> Report {
    #[cfg(feature = "metrics")]
    return measured::redis(settings).await;
    #[cfg(not(feature = "metrics"))]
    {
        let _ = settings;
        skipped("metrics-redis-get")
    }
}
