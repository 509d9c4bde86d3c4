//! What the `#[cache_store]` macro knows about a store, as a `'static`
//! value, and the link-time list of every store in the program (used to
//! refuse duplicate names and overlapping key templates when a client is
//! built).

use std::time::Duration;

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::jitter::TtlJitter;
use crate::key::{KeyTemplate, push_text};

/// A store's version: part of every key, so bumping it hides old values.
#[derive(Clone, Copy, Debug)]
pub enum Version {
    /// A constant (`version = 1`, `version = "2024-06"`).
    Static(&'static str),
    /// A function evaluated on every call (`version = path::to::fn`).
    Dynamic(fn() -> String),
}

impl Version {
    /// Appends `:v{version}` (escaped) to `key`.
    #[inline]
    pub fn push_suffix(&self, key: &mut impl std::fmt::Write) {
        let _ = key.write_str(":v");
        match self {
            Version::Static(v) => push_text(key, v),
            Version::Dynamic(f) => push_text(key, &f()),
        }
    }

    /// The version's current value.
    pub fn current(&self) -> String {
        match self {
            Version::Static(v) => (*v).to_owned(),
            Version::Dynamic(f) => f(),
        }
    }
}

/// How a store with `ttl_from` reads a value's TTL: decodes the value's
/// codec bytes and asks the user's function (`None`: the value does not
/// decode, the store's TTL applies).
pub type TtlFrom = fn(Codec, &[u8]) -> Option<Duration>;

/// A local tier's bounds: how many values it holds and how long each is
/// served from process memory (never longer than the store's TTL).
///
/// Built with [`LocalTier::new`] and its `with_*` methods, so a new bound
/// is a new method, never a breaking change (the type is
/// `#[non_exhaustive]`: other crates read its fields but cannot write a
/// struct literal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LocalTier {
    /// The most values held (when full, a new value evicts one that was
    /// read least: quick_cache's S3-FIFO).
    pub capacity: u64,
    /// How long a value is served from the local tier after it was read or
    /// fetched; `None`: the store's TTL. Capped at the store's TTL.
    pub ttl: Option<Duration>,
    /// The most bytes the tier holds, counted as each value's encoded
    /// size plus its key (see [`with_max_bytes`](Self::with_max_bytes));
    /// `None`: bounded by `capacity` alone.
    pub max_bytes: Option<u64>,
}

impl LocalTier {
    /// The default capacity of a local tier: 10,000 values.
    pub const DEFAULT_CAPACITY: u64 = 10_000;

    /// A tier of `capacity` values whose TTL is the store's. As with the
    /// builder's other settings, out-of-range values are clamped, not
    /// refused: a capacity of 0 counts as 1 (the `local(...)` option of
    /// `#[cache_store]` refuses 0 at compile time).
    ///
    /// ```
    /// use cacheme::LocalTier;
    ///
    /// let tier = LocalTier::new(10_000);
    /// assert_eq!(tier.capacity, 10_000);
    /// assert_eq!(tier.ttl, None);
    /// ```
    pub const fn new(capacity: u64) -> Self {
        LocalTier {
            capacity,
            ttl: None,
            max_bytes: None,
        }
    }

    /// The same tier, serving each value at most `ttl`: capped at the
    /// store's TTL, and at least 1 ms (a zero `ttl` counts as 1 ms).
    ///
    /// ```
    /// use cacheme::LocalTier;
    /// use std::time::Duration;
    ///
    /// let tier = LocalTier::new(1_000).with_ttl(Duration::from_secs(30));
    /// assert_eq!(tier.ttl, Some(Duration::from_secs(30)));
    /// ```
    pub const fn with_ttl(self, ttl: Duration) -> Self {
        LocalTier { ttl: Some(ttl), ..self }
    }

    /// The same tier, also bounded by weight: it holds at most `bytes`,
    /// each value counted as its encoded size (what the backend stores)
    /// plus its key's length, and at least `bytes / capacity`, so both
    /// bounds hold at once (`capacity` values, `bytes` bytes). The decoded
    /// value's own footprint in memory differs from its encoded size by a
    /// factor that depends on the type: choose `bytes` with headroom. When
    /// full, a new value evicts values read least until it fits; a value
    /// heavier than the tier's share per shard is not held (it is still
    /// served, from the backend). Zero counts as one byte.
    ///
    /// ```
    /// use cacheme::{Client, LocalTier};
    ///
    /// // At most 10,000 values and about 64 MiB of them.
    /// let tier = LocalTier::new(10_000).with_max_bytes(64 << 20);
    /// assert_eq!(tier.max_bytes, Some(64 << 20));
    /// let client = Client::builder().local(tier).build()?;
    /// # Ok::<(), cacheme::Error>(())
    /// ```
    pub const fn with_max_bytes(self, bytes: u64) -> Self {
        LocalTier {
            max_bytes: Some(bytes),
            ..self
        }
    }
}

/// Everything about one store, emitted by the macro as a `static`.
///
/// Built with [`StoreSpec::new`] and one `const` method per option, so a new
/// option is a new method with a default, never a breaking change (the
/// type is `#[non_exhaustive]`: other crates read its fields but cannot
/// write a struct literal).
#[derive(Debug)]
#[non_exhaustive]
pub struct StoreSpec {
    /// The generated type's name (`BookStore`).
    pub name: &'static str,
    /// The key template.
    pub template: KeyTemplate,
    /// How long values live.
    pub ttl: Duration,
    /// How far below `ttl` each written value's TTL is drawn
    /// (`ttl_jitter`); `None`: every value gets `ttl`.
    pub ttl_jitter: Option<TtlJitter>,
    /// The version in every key.
    pub version: Version,
    /// Whether concurrent gets of one key in this process share one
    /// backend read (`singleflight`); concurrent misses share one fetch on
    /// every store either way.
    pub singleflight: bool,
    /// The store's codec; `None` uses the client's.
    pub codec: Option<Codec>,
    /// How long a cross-process fetch lock lives (the stampede protocol);
    /// `None` uses the default.
    pub lock_ttl: Option<Duration>,
    /// The store's local tier (`local(...)`): decoded values held in this
    /// process over a remote backend; `None` uses the client's default
    /// ([`ClientBuilder::local`](crate::ClientBuilder::local)).
    pub local: Option<LocalTier>,
    /// Whether the store never has a local tier (`local = false`), not
    /// even the client's default: for values that change too often to
    /// be worth holding in process.
    pub local_off: bool,
    /// Whether the store's values can be held decoded in process (its
    /// value type is `Clone + Send + Sync + 'static`): asked when a client
    /// is built, so a store whose values cannot be held gets no local tier
    /// from the client's default (nothing subscribed, nothing announced).
    pub keeps_values: fn() -> bool,
    /// How long a value is kept past its TTL to be served when its
    /// refetch fails or times out (`stale_for`, fail-safe); `None`: never.
    pub stale_for: Option<Duration>,
    /// After a fail-safe served a stale value, how long that value is
    /// served again before the source is asked for the key again
    /// (`fail_safe_throttle`); `None`: [`StoreSpec::DEFAULT_FAIL_SAFE_THROTTLE`].
    pub fail_safe_throttle: Option<Duration>,
    /// How long a caller waits for a refetch when a stale value can be
    /// served instead (`soft_timeout`); the fetch goes on in the
    /// background. `None`: callers wait for the fetch.
    pub soft_timeout: Option<Duration>,
    /// How long a fetch may run at all (`hard_timeout`): past it the fetch
    /// is abandoned, and callers get the stale value or the fetcher's
    /// timeout error. `None`: no limit.
    pub hard_timeout: Option<Duration>,
    /// The age past which a hit starts a background refresh of its key
    /// (`refresh_after`, below the TTL); `None`: no refresh-ahead.
    pub refresh_after: Option<Duration>,
    /// The TTL of a fetched `None` (`none_ttl`: negative caching, on a
    /// store whose value is an `Option`); `None`: the store's TTL.
    pub none_ttl: Option<Duration>,
    /// The TTL a value chooses (`ttl_from = path`): decodes a value's
    /// codec bytes and asks the user's function; `None` (or a value that
    /// does not decode) uses the store's TTL.
    pub ttl_from: Option<TtlFrom>,
    /// The Rust path of the fetcher (`module::book`).
    pub fetcher: &'static str,
    /// Where the store is declared.
    pub file: &'static str,
    /// The line of the declaration.
    pub line: u32,
}

impl StoreSpec {
    /// How long a stale value served by the fail-safe is served again
    /// before the source is asked again, unless the store says
    /// (`fail_safe_throttle`): 5 s.
    pub const DEFAULT_FAIL_SAFE_THROTTLE: Duration = Duration::from_secs(5);

    /// A store with the defaults: version `1`, no singleflight, the
    /// client's codec and lock TTL, declared nowhere in particular.
    pub const fn new(name: &'static str, template: KeyTemplate, ttl: Duration) -> Self {
        StoreSpec {
            name,
            template,
            ttl,
            ttl_jitter: None,
            version: Version::Static("1"),
            singleflight: false,
            codec: None,
            lock_ttl: None,
            local: None,
            local_off: false,
            keeps_values: always,
            stale_for: None,
            fail_safe_throttle: None,
            soft_timeout: None,
            hard_timeout: None,
            refresh_after: None,
            none_ttl: None,
            ttl_from: None,
            fetcher: name,
            file: "",
            line: 0,
        }
    }

    /// How far below the TTL each written value's TTL is drawn.
    pub const fn ttl_jitter(mut self, jitter: Option<TtlJitter>) -> Self {
        self.ttl_jitter = jitter;
        self
    }

    /// The TTL of one value being written: the store's TTL, or a draw
    /// below it when the store has a `ttl_jitter`.
    pub fn write_ttl(&self) -> Duration {
        match self.ttl_jitter {
            Some(jitter) => jitter.draw(self.ttl),
            None => self.ttl,
        }
    }

    /// The version in every key.
    pub const fn version(mut self, version: Version) -> Self {
        self.version = version;
        self
    }

    /// Whether concurrent gets of one key in this process share one
    /// backend read (`singleflight`); concurrent misses share one fetch on
    /// every store either way.
    pub const fn singleflight(mut self, on: bool) -> Self {
        self.singleflight = on;
        self
    }

    /// The store's codec; `None` uses the client's.
    pub const fn codec(mut self, codec: Option<Codec>) -> Self {
        self.codec = codec;
        self
    }

    /// The cross-process fetch lock's lifetime; `None` uses the client's.
    pub const fn lock_ttl(mut self, lock_ttl: Option<Duration>) -> Self {
        self.lock_ttl = lock_ttl;
        self
    }

    /// The store's local tier (`local(...)`); `None` uses the client's
    /// default.
    pub const fn local(mut self, local: Option<LocalTier>) -> Self {
        self.local = local;
        self
    }

    /// Whether the store opts out of every local tier (`local = false`):
    /// with `true`, it gets none, whatever the client's default
    /// ([`ClientBuilder::local`](crate::ClientBuilder::local)) and its own
    /// [`local`](Self::local). Default `false`.
    pub const fn local_off(mut self, off: bool) -> Self {
        self.local_off = off;
        self
    }

    /// Whether the store's values can be held decoded in process; the
    /// macro answers for the store's value type. Default: they can.
    pub const fn keeps_values(mut self, keeps: fn() -> bool) -> Self {
        self.keeps_values = keeps;
        self
    }

    /// The local tier this store gets in a client whose default is
    /// `default`: none with `local = false`, else its own, else the
    /// default if its values can be held.
    pub fn local_tier(&self, default: Option<LocalTier>) -> Option<LocalTier> {
        match (self.local_off, self.local) {
            (true, _) => None,
            (false, Some(own)) => Some(own),
            (false, None) => default.filter(|_| (self.keeps_values)()),
        }
    }

    /// Keeps values `stale_for` past their TTL, to serve when a refetch
    /// fails (fail-safe).
    pub const fn stale_for(mut self, stale_for: Option<Duration>) -> Self {
        self.stale_for = stale_for;
        self
    }

    /// How long a stale value served by the fail-safe is served again
    /// before the source is asked again.
    pub const fn fail_safe_throttle(mut self, throttle: Option<Duration>) -> Self {
        self.fail_safe_throttle = throttle;
        self
    }

    /// How long callers wait for a refetch when a stale value exists.
    pub const fn soft_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.soft_timeout = timeout;
        self
    }

    /// How long a fetch may run before it is abandoned.
    pub const fn hard_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.hard_timeout = timeout;
        self
    }

    /// The age past which a hit refreshes its key in the background.
    pub const fn refresh_after(mut self, after: Option<Duration>) -> Self {
        self.refresh_after = after;
        self
    }

    /// The TTL of a fetched `None` (negative caching).
    pub const fn none_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.none_ttl = ttl;
        self
    }

    /// How each value's TTL is chosen from the value (`ttl_from`).
    pub const fn ttl_from(mut self, ttl_from: Option<TtlFrom>) -> Self {
        self.ttl_from = ttl_from;
        self
    }

    /// Whether values are stored with their dates (written, fresh until,
    /// stale until): stores with `stale_for`, `refresh_after`, `none_ttl`
    /// or `ttl_from`, whose freshness is judged when a value is read, not
    /// only by the backend's expiry.
    pub const fn dated(&self) -> bool {
        self.stale_for.is_some() || self.refresh_after.is_some() || self.none_ttl.is_some() || self.ttl_from.is_some()
    }

    /// The fail-safe throttle in effect.
    pub fn throttle(&self) -> Duration {
        self.fail_safe_throttle.unwrap_or(Self::DEFAULT_FAIL_SAFE_THROTTLE)
    }

    /// The fetcher's Rust path and where the store is declared.
    pub const fn declared_at(mut self, fetcher: &'static str, file: &'static str, line: u32) -> Self {
        self.fetcher = fetcher;
        self.file = file;
        self.line = line;
        self
    }
}

/// Every store declared in the program, collected at link time.
#[linkme::distributed_slice]
pub static STORES: [&'static StoreSpec];

/// Refuses two stores with the same name, the same key shape, or key
/// templates that can produce the same key (see [`KeyTemplate::shared_key`]),
/// naming both declarations and, for overlapping templates, a key both
/// would write.
pub fn check_unique(stores: &[&'static StoreSpec]) -> Result<()> {
    for (i, a) in stores.iter().enumerate() {
        for b in &stores[i + 1..] {
            let (first, second) = if (a.file, a.line) <= (b.file, b.line) {
                (a, b)
            } else {
                (b, a)
            };
            if let Some(clash) = clash(first, second) {
                return Err(Error::DuplicateStore {
                    first: format!("{} ({}:{})", first.name, first.file, first.line),
                    second: format!("{} ({}:{})", second.name, second.file, second.line),
                    clash,
                });
            }
        }
    }
    Ok(())
}

/// What two stores share, if anything.
fn clash(first: &StoreSpec, second: &StoreSpec) -> Option<String> {
    let (a, b) = (&first.template, &second.template);
    if first.name == second.name {
        return Some(format!("the same name {:?}", first.name));
    }
    if a.shape() == b.shape() {
        return Some(format!("the same key pattern ({:?} and {:?})", a.source, b.source));
    }
    let mut key = a.shared_key(b)?;
    // Any version would do (see `shared_key`); show one of theirs.
    let version = [first.version, second.version]
        .into_iter()
        .find_map(|version| match version {
            Version::Static(version) => Some(version),
            Version::Dynamic(_) => None,
        })
        .unwrap_or("1");
    Version::Static(version).push_suffix(&mut key);
    Some(format!(
        "overlapping key templates ({:?} and {:?}), both writing the key {key:?}",
        a.source, b.source
    ))
}

/// [`StoreSpec::keeps_values`]'s default.
const fn always() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Part;

    fn spec(name: &'static str, line: u32, parts: &'static [Part], version: Version) -> &'static StoreSpec {
        let source = Box::leak(
            parts
                .iter()
                .map(|part| match part {
                    Part::Lit(text) => (*text).to_owned(),
                    Part::Var(name) => format!("<{name}>"),
                })
                .collect::<String>()
                .into_boxed_str(),
        );
        Box::leak(Box::new(StoreSpec {
            name,
            template: KeyTemplate { source, parts },
            ttl: Duration::from_secs(60),
            ttl_jitter: None,
            version,
            singleflight: false,
            codec: None,
            lock_ttl: None,
            local: None,
            local_off: false,
            keeps_values: always,
            stale_for: None,
            fail_safe_throttle: None,
            soft_timeout: None,
            hard_timeout: None,
            refresh_after: None,
            none_ttl: None,
            ttl_from: None,
            fetcher: "f",
            file: "src/lib.rs",
            line,
        }))
    }

    const INFO: &[Part] = &[Part::Lit("foo:"), Part::Var("id"), Part::Lit(":info")];
    const LIST: &[Part] = &[Part::Lit("foo:list:"), Part::Var("id")];
    const ONE: &[Part] = &[Part::Lit("foo:"), Part::Var("id")];
    const TWO: &[Part] = &[Part::Lit("foo:"), Part::Var("a"), Part::Lit(":"), Part::Var("b")];

    fn dynamic() -> String {
        "from-fn".to_owned()
    }

    fn refusal(stores: &[&'static StoreSpec]) -> String {
        match check_unique(stores) {
            Err(Error::DuplicateStore { first, second, clash }) => format!("{first} / {second}: {clash}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn overlapping_templates_are_refused_with_a_key_both_write() {
        let info = spec("InfoStore", 1, INFO, Version::Static("1"));
        let list = spec("ListStore", 2, LIST, Version::Static("1"));
        assert_eq!(
            refusal(&[list, info]),
            "InfoStore (src/lib.rs:1) / ListStore (src/lib.rs:2): overlapping key templates \
             (\"foo:<id>:info\" and \"foo:list:<id>\"), both writing the key \"foo:list:info:v1\""
        );
    }

    #[test]
    fn a_version_never_keeps_overlapping_stores_apart() {
        let info = spec("InfoStore", 1, INFO, Version::Dynamic(dynamic));
        let list = spec("ListStore", 2, LIST, Version::Static("2024-06"));
        assert!(refusal(&[info, list]).ends_with("\"foo:list:info:v2024-06\""));
        let info = spec("InfoStore", 1, INFO, Version::Dynamic(dynamic));
        let list = spec("ListStore", 2, LIST, Version::Dynamic(dynamic));
        assert!(refusal(&[info, list]).ends_with("\"foo:list:info:v1\""));
        let a = spec("A", 1, ONE, Version::Static("1"));
        let b = spec("B", 2, ONE, Version::Static("2"));
        assert!(refusal(&[a, b]).ends_with("the same key pattern (\"foo:<id>\" and \"foo:<id>\")"));
    }

    #[test]
    fn stores_that_cannot_share_a_key_are_accepted() {
        let one = spec("One", 1, ONE, Version::Static("1"));
        let two = spec("Two", 2, TWO, Version::Static("1"));
        let info = spec("InfoStore", 3, INFO, Version::Static("1"));
        assert!(check_unique(&[one, two]).is_ok());
        // `foo:<id>:info` and `foo:<a>:<b>` do overlap (b = info).
        assert!(refusal(&[one, two, info]).contains("\"foo:1:info:v1\""));
    }

    #[test]
    fn local_false_leaves_a_store_without_any_tier() {
        let template = KeyTemplate {
            source: "a",
            parts: ONE,
        };
        let default = Some(LocalTier::new(100));
        let own = LocalTier::new(7);
        let plain = StoreSpec::new("A", template, Duration::from_secs(60));
        assert_eq!(plain.local_tier(default), default);
        assert_eq!(plain.local_tier(None), None);
        let declared = StoreSpec::new("A", template, Duration::from_secs(60)).local(Some(own));
        assert_eq!(declared.local_tier(default), Some(own));
        let off = StoreSpec::new("A", template, Duration::from_secs(60)).local_off(true);
        assert_eq!(off.local_tier(default), None);
        assert_eq!(off.local_tier(None), None);
    }
}
