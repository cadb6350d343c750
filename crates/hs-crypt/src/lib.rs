//! hs-crypt: the key hierarchy, object sealing, key wrapping, manifest
//! signatures and keyring files of pg_hardstorage.
//!
//! # Overview
//!
//! - [`MasterKey`]: 32 random bytes per repository, never stored in the clear.
//!   Subkeys come from BLAKE3 `derive_key` with one context string per
//!   purpose: `"pg_hardstorage v1 chunk-id"` for
//!   [`chunk_id_key`](MasterKey::chunk_id_key) (keyed-BLAKE3 chunk ids) and
//!   `"pg_hardstorage v1 seal <domain>"` for each [`Domain`].
//! - [`MasterKey::seal`] / [`MasterKey::open`]: AES-256-GCM with a fresh key
//!   per object. Sealed layout:
//!
//!   ```text
//!   version (1 byte, = 1) | salt (32 random bytes) | ciphertext | tag (16 bytes)
//!   ```
//!
//!   The object key is keyed-BLAKE3(domain subkey, salt) and the nonce is all
//!   zeros, so every key encrypts exactly one message: nonce reuse is
//!   impossible by construction. The version byte and the domain name are
//!   authenticated data. [`SEAL_OVERHEAD`] is 49 bytes. Any modification,
//!   truncation, wrong key or wrong domain fails with
//!   `verify.auth_tag_mismatch`.
//! - [`wrap_secret`] / [`unwrap_secret`]: age (X25519 recipients) for
//!   wrapping the master key into key objects.
//! - [`Keyring`]: the local 0600 JSON file holding an age identity and an
//!   ed25519 [`SigningKey`]; [`VerifyingKey`] checks [`Signature`]s.
//! - [`Error`]: one opaque error with a dotted [`code`](Error::code).
//!   Key material never appears in messages or `Debug` output.
//!
//! ```
//! use hs_crypt::{Domain, MasterKey, SEAL_OVERHEAD};
//!
//! let key = MasterKey::generate();
//! let sealed = key.seal(Domain::Manifest, b"backup manifest");
//! assert_eq!(sealed.len(), b"backup manifest".len() + SEAL_OVERHEAD);
//! assert_eq!(key.open(Domain::Manifest, &sealed)?, b"backup manifest");
//!
//! // The same bytes do not open as another kind of object.
//! let err = key.open(Domain::Chunk, &sealed).unwrap_err();
//! assert_eq!(err.code(), "verify.auth_tag_mismatch");
//! # Ok::<(), hs_crypt::Error>(())
//! ```
//!
//! # Why `ring` for AES-256-GCM
//!
//! `benches/aead.rs` seals 8 KiB and 1 MiB buffers including the per-object
//! key setup (as production does). On the development machine (2-core AMD
//! EPYC with AES-NI, VAES and VPCLMULQDQ, shared and loaded; rust 1.95,
//! `cargo bench -p hs-crypt -- --warm-up-time 1 --measurement-time 3`):
//!
//! | buffer | ring 0.17    | aes-gcm 0.10 |
//! |--------|--------------|--------------|
//! | 8 KiB  | ~2760 MB/s   | ~680 MB/s    |
//! | 1 MiB  | ~3180 MB/s   | ~660 MB/s    |
//!
//! ring is about 4x faster (hand-written assembly versus portable
//! intrinsics) and is already in the build through rustls, so production
//! code uses ring; aes-gcm is only a dev-dependency of the benchmark.
//! ring does not zeroize its expanded AES key schedule; the raw object key
//! and all master/subkey bytes are zeroized.

#![deny(missing_docs)]

mod error;
mod keyring;
mod master;
mod sign;
mod wrap;

pub use error::{Error, ErrorKind, Result};
pub use keyring::Keyring;
pub use master::{Domain, MasterKey, SEAL_OVERHEAD};
pub use sign::{Signature, SigningKey, VerifyingKey};
pub use wrap::{unwrap_secret, wrap_secret};
