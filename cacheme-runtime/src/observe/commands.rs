//! Backend command latency (feature `metrics`): the
//! `cacheme.backend.operation.duration` histogram, OpenTelemetry's
//! `db.client.operation.duration` for a cache backend.
//!
//! Every command of a [`Cache`](crate::Cache) goes through its backend, so
//! the backend is wrapped once, when the cache is made: [`Metered`] times
//! every method of the [`Backend`] trait and of the backend's own
//! stampede [`Coordinator`] (Redis's lock and fill scripts). Typed stores,
//! pipelines, the polling coordinator and untyped calls all go through it;
//! nothing else times a backend command. Typed hits on the memory backend
//! read its decoded entry directly: they are not backend commands.
//!
//! Both wrappers forward every method of their trait, those with a default
//! included (a default left in place would replace the backend's own
//! behaviour): a method added to [`Backend`] or [`Coordinator`] must be
//! forwarded here too.
//!
//! Labels: `backend` and `operation` (an [`Op`]'s name), and `result`
//! (`ok`, `error`, or `cancelled` for a command dropped before it ended,
//! such as one past the cache budget). There is no `store` label: one
//! command may serve several stores (a pipeline's batch read) or none (the
//! untyped cache).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Histogram, Unit, describe_histogram, histogram};

use super::clock::Started;
use super::metrics::names::BACKEND_OPERATION_DURATION;
use crate::backend::{Backend, BoxFuture, KeyFilter, KeyVisitor, Ttl};
use crate::error::{Op, Result};
use crate::stampede::{Coordination, Coordinator, Hearing, LockRequest, Settlement, Watch};

/// `backend` metered: the cache's backend when feature `metrics` is on
/// (a backend already metered is returned as is; `Cache::without_metrics`
/// takes the wrapper off).
pub(crate) fn metered(backend: Arc<dyn Backend>) -> Arc<dyn Backend> {
    if backend.unmetered().is_some() {
        return backend;
    }
    let timers = Arc::new(Timers::new(backend.provider()));
    Arc::new(Metered { inner: backend, timers })
}

/// How a command ended (the `result` label).
#[derive(Clone, Copy)]
enum Ended {
    Ok = 0,
    Error,
    Cancelled,
}

impl Ended {
    fn as_str(self) -> &'static str {
        match self {
            Ended::Ok => "ok",
            Ended::Error => "error",
            Ended::Cancelled => "cancelled",
        }
    }
}

/// Every [`Op`] (for the table of handles; an op past it is looked up by
/// its labels on each command).
const OPS: usize = Op::MemoryUsed as usize + 1;

/// The histograms of one backend, by operation and result, registered on
/// first use with the recorder installed then.
struct Timers {
    backend: &'static str,
    handles: [[OnceLock<Histogram>; 3]; OPS],
}

impl Timers {
    fn new(backend: &'static str) -> Self {
        Timers {
            backend,
            handles: Default::default(),
        }
    }

    fn register(&self, op: Op, ended: Ended) -> Histogram {
        describe_histogram!(
            BACKEND_OPERATION_DURATION,
            Unit::Seconds,
            "duration of a backend command by operation and result"
        );
        histogram!(
            BACKEND_OPERATION_DURATION,
            "backend" => self.backend,
            "operation" => op.to_string(),
            "result" => ended.as_str()
        )
    }

    fn record(&self, op: Op, ended: Ended, took: Duration) {
        let seconds = took.as_secs_f64();
        match self.handles.get(op as usize) {
            Some(row) => row[ended as usize]
                .get_or_init(|| self.register(op, ended))
                .record(seconds),
            None => self.register(op, ended).record(seconds),
        }
    }

    /// `command` (an `op`), timed from its first poll to its end or drop.
    fn time<'a, T: Send + 'a>(&'a self, op: Op, command: BoxFuture<'a, Result<T>>) -> BoxFuture<'a, Result<T>> {
        Box::pin(async move {
            let mut timing = Timing {
                timers: self,
                op,
                started: Started::now(),
                done: false,
            };
            let result = command.await;
            timing.end(if result.is_ok() { Ended::Ok } else { Ended::Error });
            result
        })
    }
}

/// One command in progress: recorded as `cancelled` if dropped unended.
struct Timing<'a> {
    timers: &'a Timers,
    op: Op,
    started: Started,
    done: bool,
}

impl Timing<'_> {
    fn end(&mut self, ended: Ended) {
        self.done = true;
        self.timers.record(self.op, ended, self.started.elapsed());
    }
}

impl Drop for Timing<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.end(Ended::Cancelled);
        }
    }
}

/// A backend whose commands are timed. Everything else (its name, its
/// `Debug`, `as_any`) is the inner backend's, so the runtime still
/// recognises its memory backend.
struct Metered {
    inner: Arc<dyn Backend>,
    timers: Arc<Timers>,
}

impl std::fmt::Debug for Metered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl Backend for Metered {
    fn provider(&self) -> &'static str {
        self.inner.provider()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        self.timers.time(Op::Get, self.inner.get(key))
    }

    fn get_many<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>>> {
        self.timers.time(Op::GetMany, self.inner.get_many(keys))
    }

    fn set<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Ttl) -> BoxFuture<'a, Result<()>> {
        self.timers.time(Op::Set, self.inner.set(key, value, ttl))
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        self.timers.time(Op::Delete, self.inner.delete(key))
    }

    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        self.timers.time(Op::Exists, self.inner.exists(key))
    }

    fn incr_by<'a>(&'a self, key: &'a str, delta: i64) -> BoxFuture<'a, Result<i64>> {
        self.timers.time(Op::Incr, self.inner.incr_by(key, delta))
    }

    fn clear(&self) -> BoxFuture<'_, Result<()>> {
        self.timers.time(Op::Clear, self.inner.clear())
    }

    fn delete_matching<'a>(&'a self, glob: &'a str, filter: &'a KeyFilter<'a>) -> BoxFuture<'a, Result<u64>> {
        self.timers
            .time(Op::DeleteMatching, self.inner.delete_matching(glob, filter))
    }

    fn supports_delete_matching(&self) -> bool {
        self.inner.supports_delete_matching()
    }

    fn read_timeout(&self) -> Option<Duration> {
        self.inner.read_timeout()
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        self.inner.as_any()
    }

    fn unmetered(&self) -> Option<&Arc<dyn Backend>> {
        Some(&self.inner)
    }

    fn coordination(&self) -> Coordination {
        match self.inner.coordination() {
            Coordination::Custom(inner) => Coordination::Custom(Arc::new(MeteredCoordinator {
                inner,
                timers: Arc::clone(&self.timers),
            })),
            other => other,
        }
    }

    fn set_if_absent<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Ttl) -> BoxFuture<'a, Result<bool>> {
        self.timers
            .time(Op::SetIfAbsent, self.inner.set_if_absent(key, value, ttl))
    }

    fn delete_if_equals<'a>(&'a self, key: &'a str, expected: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        self.timers
            .time(Op::DeleteIfEquals, self.inner.delete_if_equals(key, expected))
    }

    fn ttl<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Ttl>>> {
        self.timers.time(Op::Ttl, self.inner.ttl(key))
    }

    fn scan_keys<'a>(&'a self, glob: &'a str, visit: &'a mut KeyVisitor<'a>) -> BoxFuture<'a, Result<u64>> {
        self.timers.time(Op::ScanKeys, self.inner.scan_keys(glob, visit))
    }

    fn memory_used(&self) -> BoxFuture<'_, Result<u64>> {
        self.timers.time(Op::MemoryUsed, self.inner.memory_used())
    }
}

/// A backend's own coordinator, its commands timed like the backend's.
struct MeteredCoordinator {
    inner: Arc<dyn Coordinator>,
    timers: Arc<Timers>,
}

impl std::fmt::Debug for MeteredCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl Coordinator for MeteredCoordinator {
    fn try_lock<'a>(&'a self, key: &'a str, token: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool>> {
        self.timers.time(Op::Lock, self.inner.try_lock(key, token, ttl))
    }

    fn try_lock_to_refresh<'a>(&'a self, key: &'a str, token: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool>> {
        self.timers
            .time(Op::Lock, self.inner.try_lock_to_refresh(key, token, ttl))
    }

    fn renew<'a>(&'a self, key: &'a str, token: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool>> {
        self.timers.time(Op::Lock, self.inner.renew(key, token, ttl))
    }

    fn fill<'a>(&'a self, key: &'a str, token: &'a str, value: &'a [u8], ttl: Duration) -> BoxFuture<'a, Result<bool>> {
        self.timers.time(Op::Fill, self.inner.fill(key, token, value, ttl))
    }

    fn abandon<'a>(&'a self, key: &'a str, token: &'a str) -> BoxFuture<'a, Result<()>> {
        self.timers.time(Op::Unlock, self.inner.abandon(key, token))
    }

    fn watch<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Watch>> {
        self.timers.time(Op::Watch, self.inner.watch(key))
    }

    fn invalidate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        self.timers.time(Op::Delete, self.inner.invalidate(key))
    }

    fn replace<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Duration) -> BoxFuture<'a, Result<()>> {
        self.timers.time(Op::Set, self.inner.replace(key, value, ttl))
    }

    fn try_lock_many<'a>(&'a self, requests: &'a [LockRequest<'a>]) -> BoxFuture<'a, Result<Vec<bool>>> {
        self.timers.time(Op::Lock, self.inner.try_lock_many(requests))
    }

    fn renew_many<'a>(&'a self, requests: &'a [LockRequest<'a>]) -> BoxFuture<'a, Result<Vec<bool>>> {
        self.timers.time(Op::Lock, self.inner.renew_many(requests))
    }

    fn settle_many<'a>(&'a self, settlements: &'a [Settlement<'a>]) -> BoxFuture<'a, Result<Vec<bool>>> {
        self.timers.time(Op::Fill, self.inner.settle_many(settlements))
    }

    fn waiting(&self) -> usize {
        self.inner.waiting()
    }

    fn announce<'a>(&'a self, store: &'a str, payload: &'a str) -> BoxFuture<'a, Result<()>> {
        self.timers.time(Op::Announce, self.inner.announce(store, payload))
    }

    fn listen(&self, stores: &[&'static str], hear: Hearing) -> bool {
        self.inner.listen(stores, hear)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBackend;

    /// A coordinator whose every method, defaults included, answers
    /// something its trait's default would not.
    #[derive(Debug)]
    struct Distinct;

    impl Coordinator for Distinct {
        fn try_lock<'a>(&'a self, _: &'a str, _: &'a str, _: Duration) -> BoxFuture<'a, Result<bool>> {
            Box::pin(async { Ok(true) })
        }
        fn try_lock_to_refresh<'a>(&'a self, _: &'a str, _: &'a str, _: Duration) -> BoxFuture<'a, Result<bool>> {
            Box::pin(async { Ok(true) })
        }
        fn renew<'a>(&'a self, _: &'a str, _: &'a str, _: Duration) -> BoxFuture<'a, Result<bool>> {
            Box::pin(async { Ok(true) })
        }
        fn fill<'a>(&'a self, _: &'a str, _: &'a str, _: &'a [u8], _: Duration) -> BoxFuture<'a, Result<bool>> {
            Box::pin(async { Ok(true) })
        }
        fn abandon<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<()>> {
            Box::pin(async { Ok(()) })
        }
        fn watch<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Watch>> {
            Box::pin(async { Ok(Watch::polling()) })
        }
        fn invalidate<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<bool>> {
            Box::pin(async { Ok(true) })
        }
        fn replace<'a>(&'a self, _: &'a str, _: &'a [u8], _: Duration) -> BoxFuture<'a, Result<()>> {
            Box::pin(async { Ok(()) })
        }
        fn try_lock_many<'a>(&'a self, requests: &'a [LockRequest<'a>]) -> BoxFuture<'a, Result<Vec<bool>>> {
            Box::pin(async move { Ok(vec![false; requests.len() + 1]) })
        }
        fn renew_many<'a>(&'a self, requests: &'a [LockRequest<'a>]) -> BoxFuture<'a, Result<Vec<bool>>> {
            Box::pin(async move { Ok(vec![false; requests.len() + 2]) })
        }
        fn settle_many<'a>(&'a self, settlements: &'a [Settlement<'a>]) -> BoxFuture<'a, Result<Vec<bool>>> {
            Box::pin(async move { Ok(vec![true; settlements.len() + 3]) })
        }
        fn waiting(&self) -> usize {
            7
        }
        fn announce<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<()>> {
            Box::pin(async {
                Err(crate::Error::Unsupported {
                    provider: "distinct",
                    op: Op::Announce,
                })
            })
        }
        fn listen(&self, _: &[&'static str], _: Hearing) -> bool {
            true
        }
    }

    /// A memory backend that says it has [`Distinct`] as its coordinator.
    #[derive(Debug)]
    struct Coordinated(MemoryBackend);

    impl Backend for Coordinated {
        fn provider(&self) -> &'static str {
            "coordinated"
        }
        fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
            self.0.get(key)
        }
        fn set<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Ttl) -> BoxFuture<'a, Result<()>> {
            self.0.set(key, value, ttl)
        }
        fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
            self.0.delete(key)
        }
        fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
            self.0.exists(key)
        }
        fn incr_by<'a>(&'a self, key: &'a str, delta: i64) -> BoxFuture<'a, Result<i64>> {
            self.0.incr_by(key, delta)
        }
        fn clear(&self) -> BoxFuture<'_, Result<()>> {
            self.0.clear()
        }
        fn coordination(&self) -> Coordination {
            Coordination::Custom(Arc::new(Distinct))
        }
    }

    #[tokio::test]
    async fn the_coordinator_wrapper_forwards_every_method_defaults_included() {
        let backend = metered(Arc::new(Coordinated(MemoryBackend::with_capacity(10))));
        let Coordination::Custom(coordinator) = backend.coordination() else {
            panic!("the backend's own coordinator is kept");
        };
        let ttl = Duration::from_secs(1);
        assert!(coordinator.try_lock("k", "t", ttl).await.unwrap());
        assert!(coordinator.try_lock_to_refresh("k", "t", ttl).await.unwrap());
        assert!(coordinator.renew("k", "t", ttl).await.unwrap());
        assert!(coordinator.fill("k", "t", b"v", ttl).await.unwrap());
        coordinator.abandon("k", "t").await.unwrap();
        assert!(!coordinator.watch("k").await.unwrap().is_notified());
        assert!(coordinator.invalidate("k").await.unwrap());
        coordinator.replace("k", b"v", ttl).await.unwrap();
        let requests = [LockRequest {
            key: "k",
            token: "t",
            ttl,
        }];
        assert_eq!(coordinator.try_lock_many(&requests).await.unwrap().len(), 2);
        assert_eq!(coordinator.renew_many(&requests).await.unwrap().len(), 3);
        assert_eq!(coordinator.settle_many(&[]).await.unwrap().len(), 3);
        assert_eq!(coordinator.waiting(), 7);
        assert!(coordinator.announce("S", "p").await.is_err());
        assert!(coordinator.listen(&["S"], Arc::new(|_| {})));
        assert_eq!(backend.provider(), "coordinated");
        assert!(backend.unmetered().is_some());
    }
}
