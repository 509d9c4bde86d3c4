//! Codecs: how typed values become the bytes a backend stores.
//!
//! bincode 2 (serde mode) is the default: compact and fast. JSON is there
//! for values other programs must read. Decoding checks that the whole
//! input was consumed, so bytes written for another type are an error, not
//! a garbage value.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Op, Result};

/// A serialization format for typed values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// bincode 2, serde mode, standard configuration (varint integers).
    #[default]
    Bincode,
    /// JSON (`serde_json`).
    Json,
    /// MessagePack with named fields (`rmp-serde`): the format cacheme-go
    /// stores, so Go and Rust services can share a cache.
    MessagePack,
}

impl Codec {
    /// The codec's name, as used in errors.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Bincode => "bincode",
            Codec::Json => "json",
            Codec::MessagePack => "msgpack",
        }
    }

    /// Encodes `value`.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>> {
        let encoded = match self {
            Codec::Bincode => bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(Into::into),
            Codec::Json => serde_json::to_vec(value).map_err(Into::into),
            Codec::MessagePack => rmp_serde::to_vec_named(value).map_err(Into::into),
        };
        encoded.map_err(|source| self.error::<T>(Op::Encode, source))
    }

    /// Decodes a whole `T` from `bytes`; trailing bytes are an error.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T> {
        let decoded: std::result::Result<T, crate::error::BoxError> = match self {
            Codec::Bincode => match bincode::serde::decode_from_slice(bytes, bincode::config::standard()) {
                Ok((value, used)) if used == bytes.len() => Ok(value),
                Ok((_, used)) => Err(format!("{} trailing bytes after the value", bytes.len() - used).into()),
                Err(e) => Err(e.into()),
            },
            Codec::Json => serde_json::from_slice(bytes).map_err(Into::into),
            Codec::MessagePack => {
                let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
                match T::deserialize(&mut de) {
                    Ok(_) if de.position() as usize != bytes.len() => Err(format!(
                        "{} trailing bytes after the value",
                        bytes.len() - de.position() as usize
                    )
                    .into()),
                    Ok(value) => Ok(value),
                    Err(e) => Err(e.into()),
                }
            }
        };
        decoded.map_err(|source| self.error::<T>(Op::Decode, source))
    }

    fn error<T: ?Sized>(self, op: Op, source: crate::error::BoxError) -> Error {
        Error::Codec {
            op,
            codec: self.name(),
            type_name: std::any::type_name::<T>(),
            key: None,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Book {
        id: u64,
        title: String,
        tags: Vec<String>,
        rating: Option<f32>,
    }

    #[test]
    fn round_trips_in_every_codec() {
        let book = Book {
            id: 7,
            title: "Dune".into(),
            tags: vec!["sf".into()],
            rating: Some(4.5),
        };
        for codec in [Codec::Bincode, Codec::Json, Codec::MessagePack] {
            let bytes = codec.encode(&book).unwrap();
            assert_eq!(codec.decode::<Book>(&bytes).unwrap(), book, "{codec:?}");
        }
    }

    #[test]
    fn bytes_of_another_type_are_an_error_not_garbage() {
        let bytes = Codec::Bincode.encode(&(1u8, 2u8, 3u8)).unwrap();
        let err = Codec::Bincode.decode::<u8>(&bytes).unwrap_err();
        assert!(matches!(err, Error::Codec { op: Op::Decode, .. }), "{err}");
        assert!(Codec::Json.decode::<Book>(b"{\"id\":1}").is_err());
        let two = Codec::MessagePack.encode(&(1u8, 2u8)).unwrap();
        assert!(Codec::MessagePack.decode::<u8>(&two).is_err());
        assert!(Codec::Bincode.decode::<String>(&[0xff, 0xff]).is_err());
    }
}
