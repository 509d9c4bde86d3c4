//! The [`Backend`] operations of [`MemcachedBackend`], one or a few meta
//! commands each.

use std::collections::BTreeMap;

use super::protocol::{self, ProtocolError, Status};
use super::{CAS_ATTEMPTS, MemcachedBackend, PROVIDER, expiry, fail, is_live, keys, unexpected};
use crate::backend::{Backend, BoxFuture, MAX_KEYS_PER_COMMAND, Ttl};
use crate::counter;
use crate::error::{Op, Result};

impl Backend for MemcachedBackend {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move { self.get_item(key).await.map_err(fail(Op::Get, Some(key))) })
    }

    fn get_many<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>>> {
        Box::pin(async move { self.get_items(keys).await.map_err(fail(Op::GetMany, None)) })
    }

    fn set<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Ttl) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.check_size(Op::Set, key, value)?;
            let wire = self.wire_key(key).await.map_err(fail(Op::Set, Some(key)))?;
            let stamp = expiry::stamp(ttl, expiry::now_ms());
            let mut request = Vec::with_capacity(value.len() + 300);
            protocol::ms(&mut request, &wire, value, &stamp.tokens());
            let reply = self
                .request(&wire, &request)
                .await
                .map_err(|e| e.for_value_of(value.len()))
                .map_err(fail(Op::Set, Some(key)))?;
            match reply.status {
                Status::Done => Ok(()),
                _ => Err(fail(Op::Set, Some(key))(unexpected(&reply))),
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { self.delete_item(key).await.map_err(fail(Op::Delete, Some(key))) })
    }

    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let wire = self.wire_key(key).await.map_err(fail(Op::Exists, Some(key)))?;
            let mut request = Vec::new();
            protocol::mg(&mut request, &wire, "f t");
            let reply = self
                .request(&wire, &request)
                .await
                .map_err(fail(Op::Exists, Some(key)))?;
            match reply.status {
                Status::Done => Ok(is_live(&reply, expiry::now_ms())),
                Status::Miss => Ok(false),
                _ => Err(fail(Op::Exists, Some(key))(unexpected(&reply))),
            }
        })
    }

    fn incr_by<'a>(&'a self, key: &'a str, delta: i64) -> BoxFuture<'a, Result<i64>> {
        Box::pin(async move {
            match self.add_to_counter(key, delta).await {
                Ok(Ok(n)) => Ok(n),
                Ok(Err(refused)) => Err(refused),
                Err(e) => Err(fail(Op::Incr, Some(key))(e)),
            }
        })
    }

    fn clear(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.bump_generation().await.map_err(fail(Op::Clear, None)) })
    }

    fn coordination(&self) -> crate::stampede::Coordination {
        crate::stampede::Coordination::Polling
    }

    fn set_if_absent<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Ttl) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            self.check_size(Op::SetIfAbsent, key, value)?;
            self.add_item(key, value, ttl)
                .await
                .map_err(|e| e.for_value_of(value.len()))
                .map_err(fail(Op::SetIfAbsent, Some(key)))
        })
    }

    fn delete_if_equals<'a>(&'a self, key: &'a str, expected: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            self.delete_item_if(key, expected)
                .await
                .map_err(fail(Op::DeleteIfEquals, Some(key)))
        })
    }
}

impl MemcachedBackend {
    async fn get_item(&self, key: &str) -> Result<Option<Vec<u8>>, ProtocolError> {
        let wire = self.wire_key(key).await?;
        let mut request = Vec::new();
        protocol::mg(&mut request, &wire, "v f t");
        let reply = self.request(&wire, &request).await?;
        match reply.status {
            Status::Value if is_live(&reply, expiry::now_ms()) => Ok(reply.value),
            Status::Value | Status::Miss => Ok(None),
            _ => Err(unexpected(&reply)),
        }
    }

    /// One exchange (`mg ... q` per key, then `mn`) per server holding any
    /// of the keys and per [`MAX_KEYS_PER_COMMAND`] of its keys, all of
    /// them concurrently (each on a connection of the server's pool).
    async fn get_items(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, ProtocolError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let generation = self.generation().await?;
        let wires: Vec<String> = keys
            .iter()
            .map(|key| keys::data_key(&self.inner.prefix, generation, key))
            .collect();
        let mut batches: BTreeMap<usize, Vec<(usize, &str)>> = BTreeMap::new();
        for (position, wire) in wires.iter().enumerate() {
            let server = self.inner.ring.server_for(wire);
            batches.entry(server).or_default().push((position, wire));
        }
        let chunks: Vec<(usize, &[(usize, &str)])> = batches
            .iter()
            .flat_map(|(&server, wires)| wires.chunks(MAX_KEYS_PER_COMMAND).map(move |chunk| (server, chunk)))
            .collect();
        let reads = chunks.iter().map(|&(server, chunk)| self.read_batch(server, chunk));
        let mut found = vec![None; keys.len()];
        let now = expiry::now_ms();
        for batch in join_all(reads).await {
            for (position, reply) in batch? {
                if is_live(&reply, now) {
                    let slot = found.get_mut(position).ok_or_else(|| unexpected(&reply))?;
                    *slot = reply.value;
                }
            }
        }
        Ok(found)
    }

    /// Deletes and reports whether a live item was there: `mg` and `md`
    /// pipelined in one round trip.
    async fn delete_item(&self, key: &str) -> Result<bool, ProtocolError> {
        let wire = self.wire_key(key).await?;
        let mut request = Vec::new();
        protocol::mg(&mut request, &wire, "f t");
        protocol::md(&mut request, &wire, "");
        let replies = self
            .server_for(&wire)
            .exchange(&request, super::Expect::Replies(2))
            .await?;
        let (seen, deleted) = (&replies[0], &replies[1]);
        match (seen.status, deleted.status) {
            (Status::Done, Status::Done) => Ok(is_live(seen, expiry::now_ms())),
            (Status::Done | Status::Miss, Status::Done | Status::NotFound) => Ok(false),
            _ => Err(unexpected(if seen.status == Status::Done { deleted } else { seen })),
        }
    }

    /// The compare-and-swap loop of `incr_by`. The outer error is a failure
    /// to talk to the server; the inner one is the counter refusing the
    /// change (not an integer, overflow), with the value left as it was.
    async fn add_to_counter(&self, key: &str, delta: i64) -> Result<Result<i64>, ProtocolError> {
        let wire = self.wire_key(key).await?;
        let _turn = self.counter_lock(&wire).lock().await;
        for _ in 0..CAS_ATTEMPTS {
            let now = expiry::now_ms();
            let mut request = Vec::new();
            protocol::mg(&mut request, &wire, "v f t c");
            let reply = self.request(&wire, &request).await?;
            let (current, swap, stamp) = match reply.status {
                Status::Value if is_live(&reply, now) => (
                    reply.value.as_deref(),
                    Some(reply.cas),
                    expiry::keep(reply.flags, reply.ttl, now),
                ),
                // Past its deadline but not yet freed: replace it, as absent.
                Status::Value => (None, Some(reply.cas), expiry::Stamp::FOREVER),
                Status::Miss => (None, None, expiry::Stamp::FOREVER),
                _ => return Err(unexpected(&reply)),
            };
            let next = match counter::apply(PROVIDER, key, current, delta) {
                Ok(next) => next,
                Err(refused) => return Ok(Err(refused)),
            };
            let mode = swap.map_or_else(|| "ME".to_owned(), |cas| format!("C{cas}"));
            let mut write = Vec::new();
            protocol::ms(
                &mut write,
                &wire,
                next.to_string().as_bytes(),
                &format!("{} {mode}", stamp.tokens()),
            );
            let written = self.request(&wire, &write).await?;
            match written.status {
                Status::Done => return Ok(Ok(next)),
                // Someone else wrote first: read again.
                Status::Exists | Status::NotFound | Status::NotStored => tokio::task::yield_now().await,
                _ => return Err(unexpected(&written)),
            }
        }
        Err(ProtocolError::Contention(CAS_ATTEMPTS))
    }

    fn counter_lock(&self, wire: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        wire.hash(&mut hasher);
        let locks = &self.inner.counter_locks;
        &locks[(hasher.finish() % locks.len() as u64) as usize]
    }

    /// `ms ... ME` (memcached's add); when refused because an item past its
    /// deadline is still there, that item is replaced by compare-and-swap.
    async fn add_item(&self, key: &str, value: &[u8], ttl: Ttl) -> Result<bool, ProtocolError> {
        let wire = self.wire_key(key).await?;
        let stamp = expiry::stamp(ttl, expiry::now_ms()).tokens();
        for _ in 0..CAS_ATTEMPTS {
            let mut add = Vec::with_capacity(value.len() + 300);
            protocol::ms(&mut add, &wire, value, &format!("{stamp} ME"));
            let reply = self.request(&wire, &add).await?;
            match reply.status {
                Status::Done => return Ok(true),
                Status::NotStored => {}
                _ => return Err(unexpected(&reply)),
            }
            let mut look = Vec::new();
            protocol::mg(&mut look, &wire, "f t c");
            let seen = self.request(&wire, &look).await?;
            match seen.status {
                Status::Miss => continue,
                Status::Done if is_live(&seen, expiry::now_ms()) => return Ok(false),
                Status::Done => {}
                _ => return Err(unexpected(&seen)),
            }
            let mut replace = Vec::with_capacity(value.len() + 300);
            protocol::ms(&mut replace, &wire, value, &format!("{stamp} C{}", seen.cas));
            let replaced = self.request(&wire, &replace).await?;
            match replaced.status {
                Status::Done => return Ok(true),
                Status::Exists | Status::NotFound => tokio::task::yield_now().await,
                _ => return Err(unexpected(&replaced)),
            }
        }
        Err(ProtocolError::Contention(CAS_ATTEMPTS))
    }

    /// `mg` then `md ... C<cas>`: removes the item only if it still is the
    /// one that held `expected`.
    async fn delete_item_if(&self, key: &str, expected: &[u8]) -> Result<bool, ProtocolError> {
        let wire = self.wire_key(key).await?;
        for _ in 0..CAS_ATTEMPTS {
            let mut look = Vec::new();
            protocol::mg(&mut look, &wire, "v f t c");
            let seen = self.request(&wire, &look).await?;
            match seen.status {
                Status::Value if is_live(&seen, expiry::now_ms()) && seen.value.as_deref() == Some(expected) => {}
                Status::Value | Status::Miss => return Ok(false),
                _ => return Err(unexpected(&seen)),
            }
            let mut delete = Vec::new();
            protocol::md(&mut delete, &wire, &format!("C{}", seen.cas));
            let deleted = self.request(&wire, &delete).await?;
            match deleted.status {
                Status::Done => return Ok(true),
                Status::NotFound => return Ok(false),
                // Rewritten in between (perhaps with the same value): look again.
                Status::Exists => tokio::task::yield_now().await,
                _ => return Err(unexpected(&deleted)),
            }
        }
        Err(ProtocolError::Contention(CAS_ATTEMPTS))
    }

    /// `clear`: adds one to the generation counter (creating it if it was
    /// lost) and starts using the new generation at once.
    async fn bump_generation(&self) -> Result<(), ProtocolError> {
        self.check_ready()?;
        let key = &self.inner.generation_key;
        for _ in 0..CAS_ATTEMPTS {
            let mut request = Vec::new();
            protocol::ma(&mut request, key, "v");
            let reply = self.request(key, &request).await?;
            match reply.status {
                Status::Value => {
                    self.remember_generation(super::parse_generation(key, reply.value)?);
                    return Ok(());
                }
                Status::NotFound => self.create_generation().await?,
                _ => return Err(unexpected(&reply)),
            }
        }
        Err(ProtocolError::Contention(CAS_ATTEMPTS))
    }
}

/// Runs the futures concurrently and returns their outputs in order (a
/// single future runs inline).
async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.map(Box::pin).collect();
    if futures.len() == 1 {
        return vec![futures.remove(0).await];
    }
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
