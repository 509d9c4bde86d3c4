//! Codecs: how typed values become the bytes a backend stores.
//!
//! bincode 2 (serde mode) is the default: compact and fast. JSON is there
//! for values other programs must read. Decoding checks that the whole
//! input was consumed, so bytes written for another type are an error, not
//! a garbage value.
//!
//! Decoding is bounded: bytes read from a cache may be anything (another
//! program's value, a corrupted file, a hostile write), so a length prefix
//! is never trusted beyond what the input can hold. A declared length
//! larger than the bytes present is an [`Error::Codec`], never a panic or
//! an allocation that aborts the process:
//!
//! - bincode counts what it is about to allocate against a limit (its
//!   `with_limit` configuration); cacheme sets the limit from the input's
//!   length (16 times the input, rounded up to a size class), so a string or byte buffer claiming
//!   more than the input is refused before anything is allocated.
//! - MessagePack (`rmp-serde`) reads a string or byte buffer from the
//!   input as far as it goes, allocating no more than is there; lengths are
//!   32-bit and nesting is limited to 1024 levels.
//! - JSON has no length prefixes; nesting is limited to 128 levels.
//! - In every codec, sequences and maps reach serde's own types with the
//!   declared length as a *hint*, which they cap (`Vec`, `HashMap`, ... never
//!   pre-allocate more than 1 MiB from it).
//!
//! What stays the caller's: a `Deserialize` of its own that pre-allocates
//! from `size_hint` without a cap, a recursive type in bincode (which has no
//! nesting limit), and a sequence of zero-sized values (`Vec<()>`) in
//! bincode, whose elements take no bytes, so a huge declared length is a
//! long loop rather than an error.

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

    /// Whether `bytes` are this codec's encoding of an `Option`'s `None`
    /// (also of `()` and of some other values: callers know the type).
    pub(crate) fn encodes_none(self, bytes: &[u8]) -> bool {
        match self {
            Codec::Bincode => bytes == [0],
            Codec::Json => bytes == b"null",
            Codec::MessagePack => bytes == [0xC0],
        }
    }

    /// Decodes a whole `T` from `bytes`; trailing bytes are an error.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T> {
        let decoded: std::result::Result<T, crate::error::BoxError> = match self {
            Codec::Bincode => match bincode_decode(bytes) {
                Ok((value, used)) if used == bytes.len() => Ok(value),
                Ok((_, used)) => Err(format!("{} trailing bytes after the value", bytes.len() - used).into()),
                Err(bincode::error::DecodeError::LimitExceeded) => Err(format!(
                    "a length in the value claims more than its {} bytes can hold",
                    bytes.len()
                )
                .into()),
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

/// What bincode may count against its limit per input byte: it counts the
/// in-memory size of every value it decodes, at most 16 bytes (a `u128`)
/// for one encoded byte, and the length of every string or byte buffer
/// (one per encoded byte), before allocating it.
const CLAIM_PER_BYTE: usize = 16;

/// bincode's limits, as powers of two: each a size class of input (the
/// largest, 2^40, takes inputs up to 64 GiB).
#[cfg(target_pointer_width = "64")]
macro_rules! with_limit_shifts {
    ($m:ident) => {
        $m!(16, 20, 24, 28, 32, 36, 40)
    };
}
#[cfg(not(target_pointer_width = "64"))]
macro_rules! with_limit_shifts {
    ($m:ident) => {
        $m!(16, 20, 24, 28, 31)
    };
}

/// The bincode limit for an input of `len` bytes: the smallest size class
/// at least [`CLAIM_PER_BYTE`] x `len`, so every honest encoding decodes,
/// while a hostile length prefix can make bincode allocate at most
/// 256 x `len` bytes (64 KiB for small inputs), memory it never touches:
/// the read of the missing bytes fails first. `None` for inputs larger
/// than the largest class.
pub(crate) fn bincode_limit(len: usize) -> Option<usize> {
    let needed = len.checked_mul(CLAIM_PER_BYTE)?;
    macro_rules! first_fit {
        ($($shift:literal),+) => {
            [$(1usize << $shift),+].into_iter().find(|&limit| limit >= needed)
        };
    }
    with_limit_shifts!(first_fit)
}

/// Decodes with bincode's standard configuration under
/// [`bincode_limit`]`(bytes.len())`. The limit is a type parameter of
/// bincode's configuration, so each size class is its own instance.
fn bincode_decode<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<(T, usize), bincode::error::DecodeError> {
    use bincode::config::standard;
    use bincode::serde::decode_from_slice;
    let limit = bincode_limit(bytes.len());
    macro_rules! decode_under {
        ($($shift:literal),+) => {
            match limit {
                $(Some(limit) if limit == 1usize << $shift => {
                    decode_from_slice(bytes, standard().with_limit::<{ 1usize << $shift }>())
                })+
                _ => Err(bincode::error::DecodeError::LimitExceeded),
            }
        };
    }
    with_limit_shifts!(decode_under)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_knows_its_none() {
        for codec in [Codec::Bincode, Codec::Json, Codec::MessagePack] {
            assert!(codec.encodes_none(&codec.encode(&None::<String>).unwrap()), "{codec:?}");
            assert!(
                !codec.encodes_none(&codec.encode(&Some(String::new())).unwrap()),
                "{codec:?}"
            );
            assert!(!codec.encodes_none(&codec.encode(&Some(0u8)).unwrap()), "{codec:?}");
        }
    }
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

    /// bincode's varint for a length: 253 then the u64, little endian.
    fn bincode_len(len: u64) -> Vec<u8> {
        let mut bytes = vec![253];
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes
    }

    /// Every shape of hostile input in every codec: a length prefix far
    /// beyond the bytes present, alone and inside a value.
    fn hostile_inputs(codec: Codec) -> Vec<Vec<u8>> {
        match codec {
            Codec::Bincode => [u64::MAX, 1 << 40, 1 << 32, 1 << 20, 1000]
                .into_iter()
                .flat_map(|len| {
                    let mut in_book = vec![7]; // id, then the title's length
                    in_book.extend(bincode_len(len));
                    let mut nested = vec![1]; // one inner vec, claiming `len`
                    nested.extend(bincode_len(len));
                    [bincode_len(len), in_book, nested]
                })
                .collect(),
            // MessagePack lengths are 32-bit: str32, bin32, array32, map32.
            Codec::MessagePack => [0xdb, 0xc6, 0xdd, 0xdf]
                .into_iter()
                .flat_map(|marker| {
                    let mut bytes = vec![marker];
                    bytes.extend_from_slice(&u32::MAX.to_be_bytes());
                    let mut nested = vec![0x91, marker]; // [ <that> ]
                    nested.extend_from_slice(&u32::MAX.to_be_bytes());
                    [bytes, nested]
                })
                .collect(),
            Codec::Json => vec![
                "[".repeat(100_000).into_bytes(),
                b"\"\\u".to_vec(),
                b"[1e999999999]".to_vec(),
                format!("[{}", "1,".repeat(1000)).into_bytes(),
            ],
        }
    }

    /// Decodes `bytes` as every type the hostile inputs aim at; each must
    /// be an error (and none may panic or abort the test binary).
    fn assert_refused_as_every_type(codec: Codec, bytes: &[u8]) {
        use std::collections::{BTreeMap, HashMap};
        let what = format!("{codec:?} {:02x?}", &bytes[..bytes.len().min(12)]);
        assert!(codec.decode::<Vec<u8>>(bytes).is_err(), "Vec<u8> {what}");
        assert!(codec.decode::<String>(bytes).is_err(), "String {what}");
        assert!(codec.decode::<Vec<Book>>(bytes).is_err(), "Vec<Book> {what}");
        assert!(codec.decode::<Book>(bytes).is_err(), "Book {what}");
        assert!(codec.decode::<HashMap<String, u64>>(bytes).is_err(), "HashMap {what}");
        assert!(codec.decode::<BTreeMap<u64, String>>(bytes).is_err(), "BTreeMap {what}");
        assert!(codec.decode::<Vec<Vec<String>>>(bytes).is_err(), "nested {what}");
        assert!(codec.decode::<Vec<Vec<u8>>>(bytes).is_err(), "nested bytes {what}");
    }

    #[test]
    fn hostile_length_prefixes_are_decode_errors_in_every_codec() {
        for codec in [Codec::Bincode, Codec::Json, Codec::MessagePack] {
            for bytes in hostile_inputs(codec) {
                assert_refused_as_every_type(codec, &bytes);
            }
        }
    }

    #[test]
    fn a_length_beyond_the_input_is_refused_before_it_is_allocated() {
        // 2^40 bytes would abort the process if bincode allocated them.
        let err = Codec::Bincode.decode::<String>(&bincode_len(1 << 40)).unwrap_err();
        assert!(matches!(err, Error::Codec { op: Op::Decode, .. }), "{err}");
        assert!(err.to_string().contains("claims more than its 9 bytes"), "{err}");
        // Only a few bytes short: an ordinary end-of-input error.
        let mut short = Codec::Bincode.encode("hello").unwrap();
        short.pop();
        assert!(Codec::Bincode.decode::<String>(&short).is_err());
    }

    #[test]
    fn the_limit_passes_every_honest_value_even_the_densest() {
        // u128 zeros: one byte each, sixteen in memory: the densest claim.
        let dense: Vec<u128> = vec![0; 10_000];
        let bytes = Codec::Bincode.encode(&dense).unwrap();
        assert_eq!(Codec::Bincode.decode::<Vec<u128>>(&bytes).unwrap(), dense);
        for len in [0, 1, 4095, 4096, 4097, 70_000, 1 << 20] {
            let text = "x".repeat(len);
            let bytes = Codec::Bincode.encode(&text).unwrap();
            assert_eq!(Codec::Bincode.decode::<String>(&bytes).unwrap(), text, "{len}");
            let tiny: Vec<u8> = vec![0; len];
            let bytes = Codec::Bincode.encode(&tiny).unwrap();
            assert_eq!(Codec::Bincode.decode::<Vec<u8>>(&bytes).unwrap(), tiny, "{len}");
        }
    }

    #[test]
    fn limits_grow_with_the_input_by_size_classes() {
        assert_eq!(bincode_limit(0), Some(1 << 16));
        assert_eq!(bincode_limit(4096), Some(1 << 16));
        assert_eq!(bincode_limit(4097), Some(1 << 20));
        assert_eq!(bincode_limit(1 << 20), Some(1 << 24));
        for len in [1usize, 100, 5000, 1 << 22, 123_456_789] {
            let limit = bincode_limit(len).unwrap();
            assert!(limit >= len * CLAIM_PER_BYTE && limit <= (len * CLAIM_PER_BYTE * 16).max(1 << 16));
        }
        assert_eq!(bincode_limit(usize::MAX), None);
    }
}
