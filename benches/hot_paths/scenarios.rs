//! The scenarios: one `async fn(&Settings) -> Report` each, registered in
//! `main.rs`. A scenario builds its fixtures, hands its contenders to
//! [`compare`] (the baseline first) and turns the result into a table.

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;

use cacheme::Codec;
use moka::future::Cache as Moka;
use tokio::task::JoinSet;

use crate::fixtures::{App, Book, BookStore, CATEGORY, KEYS, book_of, redis_keys};
use crate::harness::{Contender, Report, Settings, Table, compare, contender, human_ns, ratio_table};

/// Concurrent callers in the `-64` scenarios.
const TASKS: u64 = 64;

/// The id of the `i`th operation: the keys are used round robin.
fn id(i: u64) -> u64 {
    i % KEYS
}

/// Typed get hits on memory against moka used by hand.
pub async fn memory_get(settings: &Settings) -> Report {
    let app = &App::memory().await;
    let keys = &(0..KEYS).map(|id| BookStore::key(&CATEGORY, &id)).collect::<Vec<_>>();
    // Moka as one would use it without cacheme: the value itself, cloned out.
    let typed: &Moka<String, Book> = &Moka::builder().max_capacity(100_000).build();
    // Moka holding bytes, decoded on every get: cacheme's work minus cacheme.
    let bytes: &Moka<String, Arc<[u8]>> = &Moka::builder().max_capacity(100_000).build();
    for (id, key) in (0..KEYS).zip(keys) {
        typed.insert(key.clone(), book_of(id)).await;
        bytes
            .insert(key.clone(), Codec::Bincode.encode(&book_of(id)).unwrap().into())
            .await;
    }
    let backend = app.cache.cache().backend();
    let measured = compare(
        settings,
        vec![
            contender("moka get (Book, cloned out)", move |n| async move {
                for i in 0..n {
                    black_box(typed.get(&keys[id(i) as usize]).await.unwrap());
                }
            }),
            contender("moka get (bytes) + bincode decode", move |n| async move {
                for i in 0..n {
                    let raw = bytes.get(&keys[id(i) as usize]).await.unwrap();
                    black_box(Codec::Bincode.decode::<Book>(&raw).unwrap());
                }
            }),
            contender("cacheme Backend::get + decode (key given)", move |n| async move {
                for i in 0..n {
                    let raw = backend.get(&keys[id(i) as usize]).await.unwrap().unwrap();
                    black_box(Codec::Bincode.decode::<Book>(&raw).unwrap());
                }
            }),
            contender("cacheme BookStore::get", move |n| async move {
                for i in 0..n {
                    black_box(BookStore::get(app, CATEGORY, id(i)).await.unwrap());
                }
            }),
        ],
    )
    .await;
    app.assert_all_hits();
    Report {
        title: "memory-get: typed get hit on memory vs raw moka".into(),
        about: format!(
            "{KEYS} warm keys, one get at a time. Target (DESIGN): a typed hit within **1.2x** of raw \
             moka `get` (first row: moka holding the `Book` and cloning it out, as one would write it \
             without cacheme; issue 14 measures the target under load, in `seed-memory`). The middle \
             rows split the cost: moka holding bytes plus the decode a backend of bytes needs, then \
             cacheme's backend layer with the key given (bytes out; a typed get skips the decode)."
        ),
        table: ratio_table(&measured),
    }
}

/// Typed get hits on Redis against redis-rs, one at a time.
pub async fn redis_get(settings: &Settings) -> Report {
    let app = &App::redis().await;
    let raw = &app.raw_redis().await;
    let keys = &redis_keys();
    let plain = &(0..KEYS).map(|id| BookStore::key(&CATEGORY, &id)).collect::<Vec<_>>();
    let backend = app.cache.cache().backend();
    let measured = compare(
        settings,
        vec![
            contender("redis-rs ConnectionManager GET", move |n| async move {
                let mut conn = raw.clone();
                for i in 0..n {
                    let value: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(&keys[id(i) as usize])
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    black_box(value.unwrap());
                }
            }),
            contender("cacheme Backend::get (key given, bytes)", move |n| async move {
                for i in 0..n {
                    black_box(backend.get(&plain[id(i) as usize]).await.unwrap().unwrap());
                }
            }),
            contender("cacheme BookStore::get", move |n| async move {
                for i in 0..n {
                    black_box(BookStore::get(app, CATEGORY, id(i)).await.unwrap());
                }
            }),
        ],
    )
    .await;
    app.assert_all_hits();
    Report {
        title: "redis-get: typed get hit on Redis vs raw redis-rs".into(),
        about: format!(
            "{KEYS} warm keys (the same values: the baseline GETs the keys cacheme wrote), one get at a \
             time on a spawned local redis-server. Target (DESIGN): `BookStore::get` within **10%** \
             (ratio ≤ 1.10) of raw redis-rs."
        ),
        table: ratio_table(&measured),
    }
}

/// The same under concurrency: 64 tasks share each side's connection.
pub async fn redis_get_64(settings: &Settings) -> Report {
    let app = Arc::new(App::redis().await);
    let raw = app.raw_redis().await;
    let keys = Arc::new(redis_keys());
    let plain = Arc::new((0..KEYS).map(|id| BookStore::key(&CATEGORY, &id)).collect::<Vec<_>>());
    let backend = app.cache.cache().backend().clone();
    let measured = compare(
        settings,
        vec![
            in_tasks("redis-rs GET", {
                let (raw, keys) = (raw.clone(), keys.clone());
                move |t, n| {
                    let (mut conn, keys) = (raw.clone(), keys.clone());
                    async move {
                        for i in ops_of(t, n) {
                            let value: Option<Vec<u8>> = redis::cmd("GET")
                                .arg(&keys[id(i) as usize])
                                .query_async(&mut conn)
                                .await
                                .unwrap();
                            black_box(value.unwrap());
                        }
                    }
                }
            }),
            in_tasks("redis-rs GET + bincode decode", move |t, n| {
                let (mut conn, keys) = (raw.clone(), keys.clone());
                async move {
                    for i in ops_of(t, n) {
                        let value: Option<Vec<u8>> = redis::cmd("GET")
                            .arg(&keys[id(i) as usize])
                            .query_async(&mut conn)
                            .await
                            .unwrap();
                        black_box(Codec::Bincode.decode::<Book>(&value.unwrap()).unwrap());
                    }
                }
            }),
            in_tasks("cacheme Backend::get (key given, bytes)", move |t, n| {
                let (backend, plain) = (backend.clone(), plain.clone());
                async move {
                    for i in ops_of(t, n) {
                        black_box(backend.get(&plain[id(i) as usize]).await.unwrap().unwrap());
                    }
                }
            }),
            in_tasks("cacheme BookStore::get", {
                let app = app.clone();
                move |t, n| {
                    let app = app.clone();
                    async move {
                        for i in ops_of(t, n) {
                            black_box(BookStore::get(&app, CATEGORY, id(i)).await.unwrap());
                        }
                    }
                }
            }),
        ],
    )
    .await;
    app.assert_all_hits();
    Report {
        title: format!("redis-get-{TASKS}: typed get hit on Redis, {TASKS} concurrent tasks"),
        about: format!(
            "{KEYS} warm keys spread over {TASKS} tasks; each side multiplexes its tasks over one \
             connection (cacheme's backend, a raw `ConnectionManager`). Time/op is wall time divided \
             by gets (inverse throughput), so the CPU a get costs shows here, where the sequential \
             scenario hides it behind the round trip. Same target as redis-get: within 10%."
        ),
        table: ratio_table(&measured),
    }
}

/// A contender that shares its `n` operations out to [`TASKS`] spawned
/// tasks: `task(t, n)` is task `t`'s work (see [`ops_of`]).
fn in_tasks<'a, F, Fut>(name: &str, task: F) -> Contender<'a>
where
    F: Fn(u64, u64) -> Fut + 'a,
    Fut: Future<Output = ()> + Send + 'static,
{
    contender(format!("{name}, {TASKS} tasks"), move |n| {
        let mut tasks = JoinSet::new();
        for t in 0..TASKS {
            tasks.spawn(task(t, n));
        }
        async move {
            tasks.join_all().await;
        }
    })
}

/// The operations of task `t` of [`in_tasks`] when `n` are shared out.
fn ops_of(t: u64, n: u64) -> impl Iterator<Item = u64> {
    (t..n).step_by(TASKS as usize)
}

/// `get_m` of every warm key against redis-rs pipelines and MGET.
pub async fn redis_get_m(settings: &Settings) -> Report {
    let app = &App::redis().await;
    let raw = &app.raw_redis().await;
    let keys = &redis_keys();
    let measured = compare(
        settings,
        vec![
            contender(format!("redis-rs pipeline of {KEYS} GETs"), move |n| async move {
                let mut conn = raw.clone();
                for _ in 0..n {
                    let mut pipe = redis::pipe();
                    for key in keys {
                        pipe.cmd("GET").arg(key);
                    }
                    let values: Vec<Option<Vec<u8>>> = pipe.query_async(&mut conn).await.unwrap();
                    black_box(values);
                }
            }),
            contender(format!("redis-rs MGET of {KEYS} keys"), move |n| async move {
                let mut conn = raw.clone();
                for _ in 0..n {
                    let values: Vec<Option<Vec<u8>>> =
                        redis::cmd("MGET").arg(keys).query_async(&mut conn).await.unwrap();
                    black_box(values);
                }
            }),
            contender(format!("cacheme BookStore::get_m of {KEYS}"), move |n| async move {
                for _ in 0..n {
                    let mut many = BookStore::get_m(app);
                    for id in 0..KEYS {
                        many.push(CATEGORY, id);
                    }
                    black_box(many.run().await.into_all().unwrap());
                }
            }),
        ],
    )
    .await;
    app.assert_all_hits();
    let round_trips = get_m_round_trips(app).await;
    Report {
        title: format!("redis-get-m: get_m of {KEYS} warm keys vs raw batches"),
        about: format!(
            "One operation = all {KEYS} keys. Target (DESIGN): one round trip for hits; counted through \
             a proxy, one `get_m` of the {KEYS} warm keys sent **{round_trips}** request(s) (one MGET per \
             500 keys, pipelined: one round trip). The raw \
             rows return bytes; cacheme also builds {KEYS} keys, decodes {KEYS} books and indexes them \
             by parameters."
        ),
        table: ratio_table(&measured),
    }
}

/// Requests of one `get_m` of every warm key, counted by a proxy.
async fn get_m_round_trips(app: &App) -> u64 {
    let (counted, proxy) = app.through_proxy().await;
    let before = proxy.requests();
    let mut many = BookStore::get_m(&counted);
    for id in 0..KEYS {
        many.push(CATEGORY, id);
    }
    assert_eq!(many.run().await.into_all().unwrap().len(), KEYS as usize);
    assert_eq!(counted.fetches(), 0, "every key was warm");
    proxy.requests() - before
}

/// The generated key builder against `format!` of the same string.
pub async fn key(settings: &Settings) -> Report {
    assert_eq!(
        BookStore::key(&CATEGORY, &42),
        format!("category:{CATEGORY}:book:42:v1")
    );
    let measured = compare(
        settings,
        vec![
            contender("format!(\"category:{}:book:{}:v1\")", |n| async move {
                for i in 0..n {
                    black_box(format!("category:{}:book:{}:v1", black_box(CATEGORY), black_box(i)));
                }
            }),
            contender("BookStore::key(&category, &book)", |n| async move {
                for i in 0..n {
                    black_box(BookStore::key(&black_box(CATEGORY), &black_box(i)));
                }
            }),
        ],
    )
    .await;
    Report {
        title: "key: building a two-variable key".into(),
        about: "`category:<category_id>:book:<book_id>` with version 1, ids counting up. The generated \
                builder escapes each value as it writes it; `format!` escapes nothing."
            .into(),
        table: ratio_table(&measured),
    }
}

/// Encode and decode of a `Book` in every codec, with encoded sizes.
pub async fn codec(settings: &Settings) -> Report {
    const CODECS: [Codec; 3] = [Codec::Bincode, Codec::Json, Codec::MessagePack];
    let book = &book_of(42);
    let encoded = &CODECS.map(|c| c.encode(book).unwrap());
    let encodes = CODECS
        .iter()
        .map(|&c| {
            contender(format!("{} encode", c.name()), move |n| async move {
                for _ in 0..n {
                    black_box(c.encode(black_box(book)).unwrap());
                }
            })
        })
        .collect();
    let decodes = CODECS
        .iter()
        .zip(encoded)
        .map(|(&c, bytes)| {
            contender(format!("{} decode", c.name()), move |n| async move {
                for _ in 0..n {
                    black_box(c.decode::<Book>(black_box(bytes)).unwrap());
                }
            })
        })
        .collect();
    let encode = compare(settings, encodes).await;
    let decode = compare(settings, decodes).await;
    let mut table = Table::new([
        "codec",
        "size",
        "encode/op",
        "× bincode",
        "decode/op",
        "× bincode",
        "allocs enc/dec",
    ]);
    for (i, c) in CODECS.iter().enumerate() {
        table.row([
            c.name().to_owned(),
            format!("{} B", encoded[i].len()),
            human_ns(encode[i].ns),
            format!("{:.2}", encode[i].ratio),
            human_ns(decode[i].ns),
            format!("{:.2}", decode[i].ratio),
            format!("{:.0} / {:.0}", encode[i].allocs, decode[i].allocs),
        ]);
    }
    Report {
        title: "codec: encode/decode of a Book".into(),
        about: "`Book { id, title, authors: Vec<String>, tags: Vec<String>, year, pages, rating, in_print }` \
                (see fixtures.rs) through `cacheme::Codec`. Encode includes the output `Vec`; decode \
                allocates the strings. Ratios are to bincode, per round."
            .into(),
        table,
    }
}
