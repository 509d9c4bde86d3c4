//! Metrics to Prometheus (feature `metrics`; docs/observability.md):
//!
//! ```sh
//! cargo run --example metrics --features metrics
//! ```
//!
//! Installs the `metrics-exporter-prometheus` recorder (before the first
//! call: each store's metric handles are registered on its first event),
//! serves a few gets and prints the scrape page a Prometheus server would
//! read. A real service would use `PrometheusBuilder::install()` (its
//! `http-listener` feature) to serve `/metrics` instead of rendering by hand.

use cacheme::{Client, Context, cache_store};
use metrics_exporter_prometheus::PrometheusBuilder;

struct App {
    cache: Client,
}

impl Context for App {
    fn cacheme(&self) -> &Client {
        &self.cache
    }
}

/// A "database" lookup, cached for a minute.
#[cache_store(key = "user:<id>", ttl = "1m")]
async fn user_name(_app: &App, id: u64) -> Result<String, std::io::Error> {
    Ok(format!("user {id}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let prometheus = PrometheusBuilder::new().build_recorder();
    let scrape = prometheus.handle();
    metrics::set_global_recorder(prometheus)?;

    let app = App {
        cache: Client::memory()?,
    };
    for id in [1, 2, 1, 1, 3, 2] {
        UserNameStore::get(&app, id).await?;
    }

    // The same counters without a metrics stack:
    let stats = app.cache.stats();
    let users = stats.store("UserNameStore").expect("gets were made");
    println!(
        "# Client::stats: {} hits, {} misses, hit ratio {:.2}\n",
        users.hits,
        users.misses,
        users.hit_ratio().unwrap_or(0.0)
    );
    // What Prometheus scrapes (dots become underscores):
    println!("{}", scrape.render());
    Ok(())
}
