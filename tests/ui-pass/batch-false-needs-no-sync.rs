//! `batch = false`: no `get_m` / `get_p`, so none of their bounds: a
//! context that is not `Sync` and a fetcher whose future is not `Send`.
#![deny(warnings)]

use std::cell::Cell;
use std::rc::Rc;

use cacheme::{cache_store, Client, Context};

struct App {
    cache: Client,
    calls: Rc<Cell<u32>>,
}

impl Context for App {
    fn cacheme(&self) -> &Client {
        &self.cache
    }
}

#[cache_store(key = "local:<id>", ttl = "5m", batch = false)]
async fn local(ctx: &App, id: u32) -> Result<u32, std::convert::Infallible> {
    let calls = Rc::clone(&ctx.calls);
    async {}.await;
    calls.set(calls.get() + 1);
    Ok(id)
}

fn main() {
    let _ = LocalStore::get;
    let _ = LocalStore::invalidate;
}
