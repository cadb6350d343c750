//! Chunk ids: keyed BLAKE3 over the chunk's plaintext.

use std::fmt;
use std::str::FromStr;

use hs_base::code;

use crate::error::{Error, ErrorKind, Result};

/// The content address of a chunk: keyed BLAKE3 of its plaintext, 32 bytes.
///
/// The key is derived from the repository's master key, so an id reveals
/// nothing about the plaintext to someone without that key. `Display` and
/// `FromStr` use 64 lowercase hex digits; serde uses the same hex string.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkId([u8; 32]);

impl ChunkId {
    /// Keyed BLAKE3 of `data` under `key`.
    pub fn compute(key: &[u8; 32], data: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(key, data).as_bytes())
    }

    /// Wraps 32 raw bytes (as stored in pack headers and index objects).
    pub const fn from_bytes(bytes: [u8; 32]) -> ChunkId {
        ChunkId(bytes)
    }

    /// The 32 raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Writes the 64 hex digits into `buf` and returns them as a `&str`.
    pub fn encode_hex<'b>(&self, buf: &'b mut [u8; 64]) -> &'b str {
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
        let mut buf = [0u8; 64];
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
        let mut out = [0u8; 32];
        if s.len() != 64 {
            return Err(Error::of_kind(
                ErrorKind::InvalidInput,
                code::USAGE_INVALID_CHUNK_ID,
                format!(
                    "a chunk id has 64 hex digits, this one has {} characters",
                    s.len()
                ),
            ));
        }
        hex::decode_to_slice(s, &mut out).map_err(|e| {
            Error::of_kind(
                ErrorKind::InvalidInput,
                code::USAGE_INVALID_CHUNK_ID,
                "a chunk id must be 64 hex digits",
            )
            .with_source(e)
        })?;
        Ok(ChunkId(out))
    }
}

impl serde::Serialize for ChunkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        s.serialize_str(self.encode_hex(&mut buf))
    }
}

impl<'de> serde::Deserialize<'de> for ChunkId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<ChunkId, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ChunkId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a chunk id as 64 hex digits")
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
        assert_eq!(s.len(), 64);
        assert_eq!(s, s.to_lowercase());
        assert_eq!(s.parse::<ChunkId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{s}\""));
        assert_eq!(serde_json::from_str::<ChunkId>(&json).unwrap(), id);
        assert!("zz".parse::<ChunkId>().is_err());
        assert_eq!(
            "g".repeat(64).parse::<ChunkId>().unwrap_err().code(),
            "usage.invalid_chunk_id"
        );
    }

    #[test]
    fn keyed_ids_differ_by_key() {
        let a = ChunkId::compute(&[1u8; 32], b"same");
        let b = ChunkId::compute(&[2u8; 32], b"same");
        assert_ne!(a, b);
        assert_eq!(a, ChunkId::compute(&[1u8; 32], b"same"));
    }
}
