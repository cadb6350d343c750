//! Chunk ids: keyed BLAKE3 over the chunk's plaintext.

use std::fmt;
use std::str::FromStr;

use hs_base::code;

use crate::error::{Error, ErrorKind, Result};

/// The content address of a chunk: keyed BLAKE3 of its plaintext, cut to its first
/// [`ChunkId::LEN`] (16) bytes.
///
/// The key is derived from the repository's master key, so an id reveals
/// nothing about the plaintext to someone without that key. `Display` uses 32
/// lowercase hex digits; `FromStr` and serde take 32, or the 64 of the 32-byte
/// ids that format 1 and 2 objects hold (cut to their first 16 bytes, which is
/// the id this build computes for the same plaintext).
///
/// 128 bits: without the key no one can search for a collision, and by chance
/// one has a probability of about 3 in 10^21 among the 1.3 * 10^9 pages of 10 TB.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkId([u8; ChunkId::LEN]);

impl ChunkId {
    /// Bytes in an id, as format 3 objects store it.
    pub const LEN: usize = 16;
    /// Bytes in an id as format 1 and 2 objects store it (the whole keyed BLAKE3).
    pub const LONG_LEN: usize = 32;

    /// Keyed BLAKE3 of `data` under `key`, cut to [`LEN`](Self::LEN) bytes.
    pub fn compute(key: &[u8; 32], data: &[u8]) -> ChunkId {
        ChunkId::from_long(blake3::keyed_hash(key, data).as_bytes())
    }

    /// Wraps [`LEN`](Self::LEN) raw bytes (as stored in format 3 objects).
    pub const fn from_bytes(bytes: [u8; ChunkId::LEN]) -> ChunkId {
        ChunkId(bytes)
    }

    /// The id of a 32-byte id of format 1 or 2: its first [`LEN`](Self::LEN) bytes.
    pub fn from_long(long: &[u8; ChunkId::LONG_LEN]) -> ChunkId {
        let mut b = [0u8; ChunkId::LEN];
        b.copy_from_slice(&long[..ChunkId::LEN]);
        ChunkId(b)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; ChunkId::LEN] {
        &self.0
    }

    /// Writes the 32 hex digits into `buf` and returns them as a `&str`.
    pub fn encode_hex<'b>(&self, buf: &'b mut [u8; 2 * ChunkId::LEN]) -> &'b str {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in self.0.iter().enumerate() {
            buf[2 * i] = HEX[(b >> 4) as usize];
            buf[2 * i + 1] = HEX[(b & 0xf) as usize];
        }
        // Only ASCII hex digits were written.
        std::str::from_utf8(buf).unwrap_or_default()
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 2 * ChunkId::LEN];
        f.write_str(self.encode_hex(&mut buf))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({self})")
    }
}

impl FromStr for ChunkId {
    type Err = Error;

    fn from_str(s: &str) -> Result<ChunkId> {
        let invalid = |msg: String| {
            Error::of_kind(ErrorKind::InvalidInput, code::USAGE_INVALID_CHUNK_ID, msg)
                .with_suggestion("copy the id from `pg_hardstorage repo verify` or a manifest")
        };
        let mut long = [0u8; ChunkId::LONG_LEN];
        let n = s.len() / 2;
        if s.len() != 2 * ChunkId::LEN && s.len() != 2 * ChunkId::LONG_LEN {
            return Err(invalid(format!(
                "a chunk id has 32 hex digits (64 in format 1 and 2 objects), this one has {} \
                 characters",
                s.len()
            )));
        }
        hex::decode_to_slice(s, &mut long[..n])
            .map_err(|e| invalid("a chunk id must be hex digits".to_string()).with_source(e))?;
        Ok(ChunkId::from_long(&long))
    }
}

impl serde::Serialize for ChunkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut buf = [0u8; 2 * ChunkId::LEN];
        s.serialize_str(self.encode_hex(&mut buf))
    }
}

impl<'de> serde::Deserialize<'de> for ChunkId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<ChunkId, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ChunkId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a chunk id as 32 (or 64) hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<ChunkId, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_serde() {
        let id = ChunkId::compute(&[7u8; 32], b"hello");
        let s = id.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(s, s.to_lowercase());
        assert_eq!(s.parse::<ChunkId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{s}\""));
        assert_eq!(serde_json::from_str::<ChunkId>(&json).unwrap(), id);
        assert!("zz".parse::<ChunkId>().is_err());
        assert_eq!(
            "g".repeat(32).parse::<ChunkId>().unwrap_err().code(),
            "usage.invalid_chunk_id"
        );
        assert!("a".repeat(48).parse::<ChunkId>().is_err());
    }

    /// A format 2 id (the whole 32-byte keyed hash, 64 hex digits) is this build's id
    /// for the same plaintext once cut to 16 bytes, whichever way it arrives.
    #[test]
    fn long_ids_of_format_2_are_cut_to_the_computed_id() {
        let key = [7u8; 32];
        let long = *blake3::keyed_hash(&key, b"page").as_bytes();
        let id = ChunkId::compute(&key, b"page");
        assert_eq!(ChunkId::from_long(&long), id);
        assert_eq!(&long[..16], id.as_bytes());
        let hex64 = hex::encode(long);
        assert_eq!(hex64.parse::<ChunkId>().unwrap(), id);
        let json = format!("\"{hex64}\"");
        assert_eq!(serde_json::from_str::<ChunkId>(&json).unwrap(), id);
        assert_eq!(id.to_string(), hex64[..32]);
    }

    #[test]
    fn keyed_ids_differ_by_key() {
        let a = ChunkId::compute(&[1u8; 32], b"same");
        let b = ChunkId::compute(&[2u8; 32], b"same");
        assert_ne!(a, b);
        assert_eq!(a, ChunkId::compute(&[1u8; 32], b"same"));
    }
}
