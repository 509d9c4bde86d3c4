//! A store as declared in the sources, turned into the runtime's own
//! types ([`KeyTemplate`], [`Codec`], [`StoreSpec`]), so keys are built,
//! matched and compared by the runtime's code, not a copy of it.

use std::time::Duration;

use cacheme_macros_core::template::Part as CorePart;
use cacheme_runtime::Codec;
use cacheme_runtime::store::key::{KeyTemplate, Part};
use cacheme_runtime::store::spec::{LocalTier, StoreSpec, TtlJitter, Version};

/// The version of a declaration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeclaredVersion {
    /// `version = 1` or `version = "2024-06"`, as text.
    Static(String),
    /// `version = path::to::fn`: only known at run time.
    Function(String),
}

/// One valid `#[cache_store]`.
#[derive(Clone, Debug)]
pub struct Declaration {
    /// The store type's name (`BookStore`).
    pub name: String,
    /// The fetcher function's name (`book`).
    pub fetcher: String,
    /// The key template as stored, store prefix included.
    pub key: String,
    /// The template's variables, in the order they appear in it.
    pub variables: Vec<String>,
    /// The type of each variable, in the same order, as written
    /// (`u64`, `String`, `&str`).
    pub types: Vec<String>,
    /// The template as the runtime uses it.
    pub template: KeyTemplate,
    /// How long values live.
    pub ttl: Duration,
    /// How far below `ttl` each value's TTL is drawn (`ttl_jitter`),
    /// when given.
    pub ttl_jitter: Option<TtlJitter>,
    /// The fetch lock's lifetime, when given.
    pub lock_ttl: Option<Duration>,
    /// The version in every key.
    pub version: DeclaredVersion,
    /// Whether `singleflight` is on.
    pub singleflight: bool,
    /// The local tier (`local` / `local(capacity = N, ttl = "30s")`), when
    /// given; its `ttl` is `None` when it is the store's.
    pub local: Option<LocalTier>,
    /// `local = false`: no local tier, not even the client's default.
    pub local_off: bool,
    /// The store's codec; `None` uses the client's.
    pub codec: Option<Codec>,
    /// The batch fetcher's path (`fetch_many = ...`), when given.
    pub fetch_many: Option<String>,
    /// Whether the store has `get_m` and `get_p` (not with `batch = false`
    /// or a borrowed parameter).
    pub batch: bool,
    /// The file, relative to the crate.
    pub file: String,
    /// The line of the attribute.
    pub line: usize,
}

impl Declaration {
    /// The declaration of a store the macro's checks accepted, found at
    /// `file:line`.
    pub fn new(store: &cacheme_macros_core::Store, file: &str, line: usize) -> Self {
        let parts: Vec<Part> = store
            .parts
            .iter()
            .map(|part| match part {
                CorePart::Lit(text) => Part::Lit(leak(text.clone())),
                CorePart::Var(name) => Part::Var(leak(name.clone())),
            })
            .collect();
        let variables: Vec<String> = store
            .parts
            .iter()
            .filter_map(|part| match part {
                CorePart::Var(name) => Some(name.clone()),
                CorePart::Lit(_) => None,
            })
            .collect();
        let types = variables
            .iter()
            .map(|name: &String| {
                store
                    .params
                    .iter()
                    .find(|(ident, _)| ident == name)
                    .map(|(_, ty)| quote::ToTokens::to_token_stream(ty).to_string().replace(' ', ""))
                    .unwrap_or_default()
            })
            .collect();
        let version = match &store.version {
            cacheme_macros_core::Version::Static(v) => DeclaredVersion::Static(v.clone()),
            cacheme_macros_core::Version::Dynamic(path) => DeclaredVersion::Function(path_text(path)),
        };
        let codec = store.codec.as_ref().map(|variant| match variant.to_string().as_str() {
            "Json" => Codec::Json,
            "MessagePack" => Codec::MessagePack,
            _ => Codec::Bincode,
        });
        Declaration {
            name: store.store.to_string(),
            fetcher: store.item.sig.ident.to_string(),
            key: store.key_source.clone(),
            variables,
            types,
            template: KeyTemplate {
                source: leak(store.key_source.clone()),
                parts: Box::leak(parts.into_boxed_slice()),
            },
            ttl: Duration::from_millis(store.ttl_ms),
            ttl_jitter: store.ttl_jitter.map(|jitter| match jitter {
                cacheme_macros_core::Jitter::Percent(percent) => TtlJitter::Percent(percent),
                cacheme_macros_core::Jitter::Millis(ms) => TtlJitter::Span(Duration::from_millis(ms)),
            }),
            lock_ttl: store.lock_ttl_ms.map(Duration::from_millis),
            version,
            singleflight: store.singleflight,
            local: store.local.as_ref().map(|local| {
                let mut tier = LocalTier::new(local.capacity);
                if let Some(ms) = local.ttl_ms {
                    tier = tier.with_ttl(Duration::from_millis(ms));
                }
                if let Some(bytes) = local.max_bytes {
                    tier = tier.with_max_bytes(bytes);
                }
                tier
            }),
            local_off: store.local_off,
            codec,
            fetch_many: store.fetch_many.as_ref().map(path_text),
            batch: store.batch,
            file: file.to_owned(),
            line,
        }
    }

    /// The spec the macro would emit for this store, as far as the
    /// runtime's duplicate check and its store functions read it (name,
    /// which also names the store's generation counters; template;
    /// version; place). A function version stays a function, only known
    /// when the program runs: the duplicate check does not call it (any
    /// version may meet any other), and the store functions take the
    /// version from the key or the caller.
    pub fn spec(&self) -> &'static StoreSpec {
        let version = match &self.version {
            DeclaredVersion::Static(v) => Version::Static(leak(v.clone())),
            DeclaredVersion::Function(_) => Version::Dynamic(version_of_the_running_program),
        };
        let spec = StoreSpec::new(leak(self.name.clone()), self.template, self.ttl)
            .version(version)
            .singleflight(self.singleflight)
            .codec(self.codec)
            .ttl_jitter(self.ttl_jitter)
            .lock_ttl(self.lock_ttl)
            .declared_at(
                leak(self.fetcher.clone()),
                leak(self.file.clone()),
                u32::try_from(self.line).unwrap_or(u32::MAX),
            );
        Box::leak(Box::new(spec))
    }

    /// `src/lib.rs:12`.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }

    /// The version as shown: `1`, or `fn path::to::version`.
    pub fn version_text(&self) -> String {
        match &self.version {
            DeclaredVersion::Static(v) => v.clone(),
            DeclaredVersion::Function(path) => format!("fn {path}"),
        }
    }
}

/// Stands for a `version = path::to::fn` the CLI cannot call; nothing
/// does (see [`Declaration::spec`]).
fn version_of_the_running_program() -> String {
    String::new()
}

/// The runtime's templates and specs borrow `'static` text, as the
/// macro's are literals in the program. A CLI run parses a handful of
/// declarations once, so leaking their text lets it use those types
/// unchanged instead of a second copy of their key rules.
fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

fn path_text(path: &syn::Path) -> String {
    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    let joined = segments.join("::");
    if path.leading_colon.is_some() {
        format!("::{joined}")
    } else {
        joined
    }
}
