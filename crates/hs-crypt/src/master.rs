//! The repository master key, its derived subkeys, and AEAD sealing of objects.

use std::fmt;

use hs_base::code;
use rand::{rngs::OsRng, RngCore};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use zeroize::Zeroize;

use crate::error::{Error, ErrorKind, Result};

/// Length of a master key in bytes.
const KEY_LEN: usize = 32;
/// First byte of every sealed object.
const SEAL_VERSION: u8 = 1;
/// Length of the random per-object salt.
const SALT_LEN: usize = 32;
/// Length of the AES-GCM authentication tag.
const TAG_LEN: usize = 16;
/// Bytes before the ciphertext: version byte and salt.
const HEADER_LEN: usize = 1 + SALT_LEN;

/// How much longer a sealed object is than its plaintext:
/// `sealed.len() == plaintext.len() + SEAL_OVERHEAD` (1 version byte, a
/// 32-byte salt and a 16-byte tag).
pub const SEAL_OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// BLAKE3 `derive_key` context of the chunk-id subkey. Part of the format.
const CHUNK_ID_CONTEXT: &str = "pg_hardstorage v1 chunk-id";

/// What a sealed object is. Each domain has its own subkey and is
/// authenticated, so an object sealed as one domain never opens as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Domain {
    /// A compressed chunk (blob) inside a pack.
    Chunk,
    /// The header at the end of a pack.
    PackHeader,
    /// An index object.
    Index,
    /// A backup manifest.
    Manifest,
    /// A WAL segment object.
    Wal,
    /// Data in a key object.
    KeyObject,
}

impl Domain {
    /// Every domain, in a fixed order.
    pub const ALL: &'static [Domain] = &[
        Domain::Chunk,
        Domain::PackHeader,
        Domain::Index,
        Domain::Manifest,
        Domain::Wal,
        Domain::KeyObject,
    ];

    /// Stable lowercase name, part of the repository format (it is in the
    /// key-derivation context and in the authenticated data).
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Chunk => "chunk",
            Domain::PackHeader => "pack-header",
            Domain::Index => "index",
            Domain::Manifest => "manifest",
            Domain::Wal => "wal",
            Domain::KeyObject => "key-object",
        }
    }

    /// BLAKE3 `derive_key` context of this domain's sealing subkey.
    fn context(self) -> &'static str {
        match self {
            Domain::Chunk => "pg_hardstorage v1 seal chunk",
            Domain::PackHeader => "pg_hardstorage v1 seal pack-header",
            Domain::Index => "pg_hardstorage v1 seal index",
            Domain::Manifest => "pg_hardstorage v1 seal manifest",
            Domain::Wal => "pg_hardstorage v1 seal wal",
            Domain::KeyObject => "pg_hardstorage v1 seal key-object",
        }
    }

    fn index(self) -> usize {
        match self {
            Domain::Chunk => 0,
            Domain::PackHeader => 1,
            Domain::Index => 2,
            Domain::Manifest => 3,
            Domain::Wal => 4,
            Domain::KeyObject => 5,
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The repository's random master key, from which every data key is derived.
///
/// Held in memory only; stored in the repository only wrapped (see
/// [`crate::wrap_secret`]). All key material, including the derived subkeys,
/// is zeroized on drop. `Debug` prints `MasterKey(..)`.
pub struct MasterKey {
    key: [u8; KEY_LEN],
    chunk_id_key: [u8; 32],
    domain_keys: [[u8; 32]; 6],
}

impl MasterKey {
    /// A new key of 32 bytes from the operating system's CSPRNG.
    ///
    /// # Panics
    /// If the operating system's random source fails.
    pub fn generate() -> MasterKey {
        let mut key = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut key);
        let mk = MasterKey::from_array(&key);
        key.zeroize();
        mk
    }

    /// The raw key bytes, for wrapping only. Zeroize the copy when done.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.key.to_vec()
    }

    /// Rebuilds a key from [`to_bytes`](MasterKey::to_bytes) output.
    ///
    /// Errors with `verify.master_key_invalid` unless `b` is exactly 32 bytes.
    pub fn from_bytes(b: &[u8]) -> Result<MasterKey> {
        let key: &[u8; KEY_LEN] = b.try_into().map_err(|_| {
            Error::of_kind(
                ErrorKind::MasterKeyInvalid,
                code::VERIFY_MASTER_KEY_INVALID,
                format!("master key has {} bytes, expected {KEY_LEN}", b.len()),
            )
            .with_suggestion("the key object is corrupt; run `pg_hardstorage repo verify`")
        })?;
        Ok(MasterKey::from_array(key))
    }

    fn from_array(key: &[u8; KEY_LEN]) -> MasterKey {
        let mut domain_keys = [[0u8; 32]; 6];
        for d in Domain::ALL {
            domain_keys[d.index()] = blake3::derive_key(d.context(), key);
        }
        MasterKey {
            key: *key,
            chunk_id_key: blake3::derive_key(CHUNK_ID_CONTEXT, key),
            domain_keys,
        }
    }

    /// The subkey for keyed-BLAKE3 chunk ids (never used for encryption).
    pub fn chunk_id_key(&self) -> [u8; 32] {
        self.chunk_id_key
    }

    /// Encrypts and authenticates `plaintext` as an object of `domain`.
    ///
    /// Output: version byte `1` | 32-byte random salt | AES-256-GCM ciphertext
    /// | 16-byte tag, [`SEAL_OVERHEAD`] bytes longer than the input. The
    /// AES key is keyed-BLAKE3(domain subkey, salt) and used for this one
    /// message with an all-zero nonce. Sealing the same plaintext twice gives
    /// different output.
    ///
    /// # Panics
    /// If the OS random source fails, or `plaintext` exceeds AES-GCM's limit
    /// of about 64 GiB per message.
    pub fn seal(&self, domain: Domain, plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        out.push(SEAL_VERSION);
        let mut salt = [0u8; SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        out.extend_from_slice(&salt);
        out.extend_from_slice(plaintext);
        let key = self.object_key(domain, &salt);
        let tag = key
            .seal_in_place_separate_tag(
                zero_nonce(),
                Aad::from(aad(SEAL_VERSION, domain)),
                &mut out[HEADER_LEN..],
            )
            .expect("AES-GCM seal fails only above the per-message size limit");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Checks and decrypts an object made by [`seal`](MasterKey::seal) with
    /// the same key and `domain`.
    ///
    /// Any modification, truncation, other key or other domain gives
    /// `verify.auth_tag_mismatch`.
    pub fn open(&self, domain: Domain, sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(crate::error::auth_tag_mismatch(format!(
                "sealed {domain} object is truncated: {} bytes, at least {SEAL_OVERHEAD} needed",
                sealed.len()
            )));
        }
        let version = sealed[0];
        if version != SEAL_VERSION {
            return Err(crate::error::auth_tag_mismatch(format!(
                "sealed {domain} object has unknown format version {version} \
                 (corrupt, or written by a newer pg_hardstorage)"
            )));
        }
        let (salt, body) = sealed[1..].split_at(SALT_LEN);
        let mut buf = body.to_vec();
        let key = self.object_key(domain, salt);
        let plain_len = key
            .open_in_place(zero_nonce(), Aad::from(aad(version, domain)), &mut buf)
            .map_err(|_| {
                crate::error::auth_tag_mismatch(format!(
                    "sealed {domain} object failed authentication (wrong key, wrong kind of object, or modified)"
                ))
            })?
            .len();
        buf.truncate(plain_len);
        Ok(buf)
    }

    /// The one-message AES-256-GCM key for (domain, salt).
    fn object_key(&self, domain: Domain, salt: &[u8]) -> LessSafeKey {
        let mut k = *blake3::keyed_hash(&self.domain_keys[domain.index()], salt).as_bytes();
        let key = UnboundKey::new(&AES_256_GCM, &k).expect("AES-256 key is 32 bytes");
        k.zeroize();
        LessSafeKey::new(key)
    }
}

/// The fixed nonce: safe because every object key encrypts one message.
fn zero_nonce() -> Nonce {
    Nonce::assume_unique_for_key([0u8; NONCE_LEN])
}

/// Authenticated data: version byte, then the domain name.
fn aad(version: u8, domain: Domain) -> Vec<u8> {
    let mut a = Vec::with_capacity(1 + domain.as_str().len());
    a.push(version);
    a.extend_from_slice(domain.as_str().as_bytes());
    a
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.key.zeroize();
        self.chunk_id_key.zeroize();
        self.domain_keys.zeroize();
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bit_flip_and_truncation_of_a_small_object_fails() {
        let mk = MasterKey::generate();
        let sealed = mk.seal(Domain::Index, b"ten bytes!");
        assert_eq!(sealed.len(), 10 + SEAL_OVERHEAD);
        for bit in 0..sealed.len() * 8 {
            let mut s = sealed.clone();
            s[bit / 8] ^= 1 << (bit % 8);
            let e = mk.open(Domain::Index, &s).unwrap_err();
            assert_eq!(e.code(), "verify.auth_tag_mismatch", "bit {bit}");
        }
        for len in 0..sealed.len() {
            let e = mk.open(Domain::Index, &sealed[..len]).unwrap_err();
            assert_eq!(e.code(), "verify.auth_tag_mismatch", "len {len}");
        }
        assert_eq!(mk.open(Domain::Index, &sealed).unwrap(), b"ten bytes!");
    }

    #[test]
    fn subkeys_are_distinct_and_deterministic() {
        let mk = MasterKey::generate();
        let again = MasterKey::from_bytes(&mk.to_bytes()).unwrap();
        assert_eq!(mk.chunk_id_key(), again.chunk_id_key());
        let mut all: Vec<[u8; 32]> = mk.domain_keys.to_vec();
        all.push(mk.chunk_id_key);
        all.push(mk.key);
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        assert_eq!(Domain::ALL.len(), mk.domain_keys.len());
    }

    #[test]
    fn from_bytes_rejects_wrong_length() {
        for len in [0, 16, 31, 33, 64] {
            let e = MasterKey::from_bytes(&vec![1u8; len]).unwrap_err();
            assert_eq!(e.code(), "verify.master_key_invalid");
        }
    }

    #[test]
    fn debug_hides_key() {
        let mk = MasterKey::from_bytes(&[0xab; 32]).unwrap();
        let d = format!("{mk:?}");
        assert_eq!(d, "MasterKey(..)");
    }
}
