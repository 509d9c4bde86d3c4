//! `cargo cacheme get`: one value, decoded when its codec is
//! self-describing (JSON, MessagePack), hex otherwise, with its TTL.
//!
//! A store key is read where the store keeps its value: the runtime's
//! [`storage_key`](cacheme_runtime::store::storage_key) adds the store's
//! current generation on backends that cannot list keys (memcached).

use cacheme_runtime::Codec;
use cacheme_runtime::store::{self, spec::StoreSpec};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::ops::{self, Connection, key};
use crate::opt::{CodecArg, GetOpt, KeyOpt};
use crate::output;
use crate::scan;

/// The key an operation works on, and the codec of its values.
pub struct Target {
    /// The key without the backend's prefix: a store key when a store was
    /// named, else the exact cache key.
    pub key: String,
    /// `BookStore (src/lib.rs:12)`, when a store was named.
    pub store: Option<String>,
    /// The named store's spec, for the runtime's store functions.
    pub spec: Option<&'static StoreSpec>,
    /// How values are decoded: `None` when neither the store nor the
    /// command line says (the client's codec is not in the sources).
    pub codec: Option<Codec>,
}

/// The key `opt` names (a store and its values, or a raw key), and the
/// codec of its values (`codec`, given on the command line, for raw keys
/// and stores that use the client's).
pub fn target(opt: &KeyOpt, codec: Option<CodecArg>) -> Result<Target> {
    let chosen = codec.map(|c| match c {
        CodecArg::Bincode => Codec::Bincode,
        CodecArg::Json => Codec::Json,
        CodecArg::Msgpack => Codec::MessagePack,
    });
    let store_name = match (&opt.key, &opt.store) {
        (Some(raw), None) => {
            return Ok(Target {
                key: raw.clone(),
                store: None,
                spec: None,
                codec: chosen,
            });
        }
        (_, Some(name)) => name,
        (None, None) => {
            return Err(Error::Usage(
                "give --store NAME and its values, or --key KEY".to_owned(),
            ));
        }
    };
    let sources = scan::crate_sources(opt.source.manifest_path.as_deref())?;
    let store = ops::find(&sources, store_name)?;
    let key = match &opt.key {
        Some(raw) => raw.clone(),
        None => key::build(store, &opt.values, &opt.params, opt.version.as_deref())?,
    };
    Ok(Target {
        key,
        store: Some(format!("{} ({})", store.name, store.location())),
        spec: Some(store.spec()),
        codec: store.codec.or(chosen),
    })
}

impl Target {
    /// The key the value is stored under: a store key with the store's
    /// current generation where the backend keeps one, a raw key as given.
    pub async fn storage_key(&self, connection: &Connection) -> Result<String> {
        let Some(spec) = self.spec else {
            return Ok(self.key.clone());
        };
        store::storage_key(&connection.client, spec, &self.key)
            .await
            .map(|key| key.into_owned())
            .map_err(|e| connection.error("cannot read the store's generation", e))
    }
}

/// Prints the value and its TTL; exit code 1 when there is no value.
pub async fn run(opt: &GetOpt) -> Result<i32> {
    let target = target(&opt.key, opt.codec)?;
    let connection = Connection::open(opt.key.backend.url()?).await?;
    let backend = connection.cache.backend();
    let key = target.storage_key(&connection).await?;
    let found = backend
        .get(&key)
        .await
        .map_err(|e| connection.error("cannot read the key", e))?;
    if let Some(store) = &target.store {
        println!("store: {store}");
    }
    println!("key:   {key}");
    let Some(bytes) = found else {
        println!("no value under this key in {}", connection.shown);
        return Ok(1);
    };
    let ttl = match backend.ttl(&key).await {
        Ok(Some(Some(left))) => format!("{} left", output::duration(left)),
        Ok(Some(None)) => "no expiry".to_owned(),
        Ok(None) => "expired just now".to_owned(),
        Err(cacheme_runtime::Error::Unsupported { provider, .. }) => {
            format!("unknown (the {provider} backend does not report TTLs)")
        }
        Err(e) => return Err(connection.error("cannot read the key's TTL", e)),
    };
    println!("ttl:   {ttl}");
    let payload = match store::stored_dates(&bytes) {
        Some((dates, payload)) => {
            println!("dates: {}", describe_dates(dates));
            payload
        }
        None => &bytes[..],
    };
    print!("{}", render(target.codec, payload));
    Ok(0)
}

/// A value's dates (stores with `stale_for`, `refresh_after`, `none_ttl`
/// or `ttl_from`), relative to now: "written 1m ago, fresh for 4m, stale
/// until 1h4m from now".
fn describe_dates(dates: store::StoredDates) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let since = |at: u64| output::duration(std::time::Duration::from_millis(now.saturating_sub(at)));
    let until = |at: u64| output::duration(std::time::Duration::from_millis(at.saturating_sub(now)));
    let fresh = if now < dates.fresh_until_ms {
        format!("fresh for {}", until(dates.fresh_until_ms))
    } else {
        format!("stale since {}", since(dates.fresh_until_ms))
    };
    format!(
        "written {} ago, {fresh}, kept for the fail-safe {} more",
        since(dates.written_ms),
        until(dates.stale_until_ms)
    )
}

/// The value as text: pretty JSON for self-describing codecs, hex for
/// bincode or bytes that do not decode. With no codec known, JSON when the
/// bytes are JSON, hex otherwise.
pub fn render(codec: Option<Codec>, bytes: &[u8]) -> String {
    let Some(codec) = codec else {
        return match Codec::Json.decode::<Value>(bytes) {
            Ok(value) => format!("value (json, {} bytes):\n{value:#}\n", bytes.len()),
            Err(_) => format!(
                "value ({} bytes, hex; not JSON, and no codec known: pass --codec msgpack to decode MessagePack):\n{}\n",
                bytes.len(),
                output::hex(bytes)
            ),
        };
    };
    let decoded = match codec {
        Codec::Json | Codec::MessagePack => codec.decode::<Value>(bytes).ok(),
        _ => None,
    };
    match decoded {
        Some(value) => format!("value ({}, {} bytes):\n{value:#}\n", codec.name(), bytes.len()),
        None => {
            let why = match codec {
                Codec::Json | Codec::MessagePack => format!("does not decode as {}", codec.name()),
                _ => format!("{} is not self-describing", codec.name()),
            };
            format!("value ({} bytes, hex; {why}):\n{}\n", bytes.len(), output::hex(bytes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_describing_values_are_decoded_others_shown_as_hex() {
        let json = Codec::Json.encode(&serde_json::json!({"id": 42})).unwrap();
        assert_eq!(
            render(Some(Codec::Json), &json),
            "value (json, 9 bytes):\n{\n  \"id\": 42\n}\n"
        );
        let packed = Codec::MessagePack.encode(&serde_json::json!([1, "a"])).unwrap();
        assert!(render(Some(Codec::MessagePack), &packed).contains("\"a\""));
        let text = render(Some(Codec::Bincode), &[1, 2]);
        assert_eq!(text, "value (2 bytes, hex; bincode is not self-describing):\n0102\n");
        assert!(render(Some(Codec::Json), b"\xff").contains("does not decode as json"));
        // No codec known (a raw key, a store on the client's codec).
        assert_eq!(render(None, &json), "value (json, 9 bytes):\n{\n  \"id\": 42\n}\n");
        assert!(render(None, &[1, 2]).contains("hex; not JSON"));
    }
}
