//! Writes off the caller's path: a fetched value's fill (or a failed
//! fetch's release) runs on a task of its own, so a caller that is
//! cancelled cannot cut it short, and the caller waits for it at most one
//! cache budget. The number of such writes in flight is bounded per client;
//! past it, a write is dropped and reported rather than memory growing.

use std::future::Future;

use tokio::time::Instant;

use crate::client::Client;
use crate::logger::EventKind;
use crate::spec::StoreSpec;

/// Runs `write` on its own task and waits for it until `deadline` at most
/// (it goes on afterwards). Without a free slot, `write` is dropped (its
/// own drop guards still run) and reported as `FILL_DROPPED`.
pub(crate) async fn write_behind<W>(client: &Client, spec: &StoreSpec, key: &str, deadline: Instant, write: W)
where
    W: Future<Output = ()> + Send + 'static,
{
    let Ok(slot) = client.fills().clone().try_acquire_owned() else {
        client.log(EventKind::FillDropped, spec, key, None);
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // No runtime to run it on: write inline.
        write.await;
        return;
    };
    let task = runtime.spawn(async move {
        write.await;
        drop(slot);
    });
    // Cancelling this wait leaves the task running.
    let _ = tokio::time::timeout_at(deadline, task).await;
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::logger::{Event, Logger};
    use crate::store::key::{KeyTemplate, Part};
    use crate::store::spec::Version;

    static SPEC: StoreSpec = StoreSpec::new(
        "ReportStore",
        KeyTemplate {
            source: "report:<id>",
            parts: &[Part::Lit("report:"), Part::Var("id")],
        },
        Duration::from_secs(60),
    )
    .version(Version::Static("1"))
    .declared_at("report", "src/lib.rs", 1);

    #[derive(Clone, Default)]
    struct Kinds(Arc<Mutex<Vec<EventKind>>>);

    impl Logger for Kinds {
        fn log(&self, event: &Event<'_>) {
            self.0.lock().unwrap().push(event.kind);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_bound_writes_are_dropped_and_reported_and_callers_wait_one_budget() {
        let kinds = Kinds::default();
        let client = Client::builder()
            .max_pending_fills(1)
            .logger(kinds.clone())
            .build_for_unit_tests()
            .unwrap();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let started = Instant::now();
        let deadline = started + Duration::from_millis(500);
        // A write that does not finish: the caller waits until its deadline.
        write_behind(&client, &SPEC, "report:1:v1", deadline, async move {
            let _ = released.await;
        })
        .await;
        assert_eq!(
            Instant::now(),
            deadline,
            "the caller waited one budget, not for the write"
        );
        // The one slot is taken: the next write is dropped, not queued.
        let ran = Arc::new(Mutex::new(false));
        let flag = ran.clone();
        write_behind(&client, &SPEC, "report:2:v1", Instant::now(), async move {
            *flag.lock().unwrap() = true;
        })
        .await;
        assert!(!*ran.lock().unwrap());
        assert_eq!(*kinds.0.lock().unwrap(), [EventKind::FillDropped]);
        // Once the first write ends, flush returns and a slot is free again.
        release.send(()).unwrap();
        client.flush().await;
        write_behind(
            &client,
            &SPEC,
            "report:3:v1",
            Instant::now() + Duration::from_secs(1),
            async {},
        )
        .await;
        assert_eq!(kinds.0.lock().unwrap().len(), 1, "no more drops");
    }
}
