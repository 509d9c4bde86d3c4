//! cacheme's example service: an HTTP bookshop over SQLite whose reads go
//! through typed cache stores.
//!
//! ```sh
//! cargo run -p bookshop                                   # memory cache
//! CACHEME_URL=redis://127.0.0.1:6379 cargo run -p bookshop   # Redis
//! ```
//!
//! Environment: `CACHEME_URL` (default `memory://`), `BOOKSHOP_ADDR`
//! (default `127.0.0.1:3000`; port 0 picks a free one), `BOOKSHOP_DB` (a
//! SQLite file; default `:memory:`, seeded at start). See README.md.

#![forbid(unsafe_code)]

mod db;
mod http;
mod stores;

use std::process::ExitCode;
use std::sync::Arc;

use cacheme::{Cache, Client, Event, Logger};

use crate::db::Db;
use crate::stores::App;

/// Prints each store event: `[HIT] BookStore book:1`.
struct PrintLogger;

impl Logger for PrintLogger {
    fn log(&self, event: &Event<'_>) {
        println!("    [{}] {} {}", event.kind, event.store, event.key);
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bookshop: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("CACHEME_URL").unwrap_or_else(|_| "memory://".to_owned());
    let addr = std::env::var("BOOKSHOP_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let path = std::env::var("BOOKSHOP_DB").unwrap_or_else(|_| ":memory:".to_owned());

    // The recorder goes in before the first cache call: each store's
    // metrics are registered on its first event.
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = prometheus.handle();
    metrics::set_global_recorder(prometheus)?;

    let cache = Cache::open(&url).await?;
    let provider = cache.backend().provider();
    let app = Arc::new(App {
        cache: Client::builder().cache(cache).logger(PrintLogger).build()?,
        db: Db::open(&path)?,
        metrics,
    });
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "bookshop: listening on http://{} (cache: {provider}, database: {path})",
        listener.local_addr()?
    );
    axum::serve(listener, http::router(app))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
