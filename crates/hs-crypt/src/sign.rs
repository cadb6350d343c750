//! Ed25519 signing keys, verifying keys and signatures (for manifests).

use std::fmt;

use ed25519_dalek::{Signer, SECRET_KEY_LENGTH};
use hs_base::code;
use rand::rngs::OsRng;

use crate::error::{Error, ErrorKind, Result};

/// An ed25519 secret signing key. Zeroized on drop; `Debug` prints
/// `SigningKey(..)`.
pub struct SigningKey(ed25519_dalek::SigningKey);

/// An ed25519 public key that checks [`Signature`]s.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerifyingKey(ed25519_dalek::VerifyingKey);

/// A 64-byte ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; 64]);

impl SigningKey {
    /// A new key from the operating system's CSPRNG.
    pub fn generate() -> SigningKey {
        SigningKey(ed25519_dalek::SigningKey::generate(&mut OsRng))
    }

    pub(crate) fn from_secret(secret: &[u8; SECRET_KEY_LENGTH]) -> SigningKey {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(secret))
    }

    pub(crate) fn secret_hex(&self) -> zeroize::Zeroizing<String> {
        let mut secret = self.0.to_bytes();
        let h = zeroize::Zeroizing::new(hex::encode(secret));
        zeroize::Zeroize::zeroize(&mut secret);
        h
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.verifying_key())
    }

    /// Signs `msg` (pure Ed25519, deterministic).
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.0.sign(msg).to_bytes())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl VerifyingKey {
    /// Lowercase hex of the 32-byte key.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// Parses [`to_hex`](VerifyingKey::to_hex) output (either case).
    ///
    /// Errors with `usage.verifying_key_invalid` if it is not 64 hex digits
    /// encoding a valid curve point.
    pub fn from_hex(s: &str) -> Result<Self> {
        let invalid = |why: &str| {
            Error::of_kind(
                ErrorKind::VerifyingKeyInvalid,
                code::USAGE_VERIFYING_KEY_INVALID,
                format!("invalid ed25519 verifying key: {why}"),
            )
        };
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| invalid("expected 64 hex digits"))?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(VerifyingKey)
            .map_err(|_| invalid("not a valid curve point"))
    }

    /// The raw 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Checks `sig` over `msg` (strict verification: rejects weak keys and
    /// malleable signatures). Errors with `verify.signature_invalid`.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<()> {
        let s = ed25519_dalek::Signature::from_bytes(&sig.0);
        self.0.verify_strict(msg, &s).map_err(|_| {
            Error::of_kind(
                ErrorKind::SignatureInvalid,
                code::VERIFY_SIGNATURE_INVALID,
                format!(
                    "ed25519 signature does not verify with key {}",
                    self.to_hex()
                ),
            )
            .with_suggestion(
                "the signed object is corrupt, was modified, or was signed by another key; \
                 run `pg_hardstorage repo verify`",
            )
        })
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", self.to_hex())
    }
}

impl Signature {
    /// The raw 64 bytes.
    pub fn to_bytes(&self) -> [u8; 64] {
        self.0
    }

    /// Wraps 64 raw bytes; any other length errors with
    /// `verify.signature_invalid`.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        let a: [u8; 64] = b.try_into().map_err(|_| {
            Error::of_kind(
                ErrorKind::SignatureInvalid,
                code::VERIFY_SIGNATURE_INVALID,
                format!("ed25519 signature has {} bytes, expected 64", b.len()),
            )
        })?;
        Ok(Signature(a))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secret() {
        let sk = SigningKey::generate();
        assert_eq!(format!("{sk:?}"), "SigningKey(..)");
        assert!(!format!("{:?}", sk.verifying_key()).contains(sk.secret_hex().as_str()));
    }

    #[test]
    fn secret_hex_round_trips() {
        let sk = SigningKey::generate();
        let mut b = [0u8; 32];
        hex::decode_to_slice(sk.secret_hex().as_str(), &mut b).unwrap();
        let again = SigningKey::from_secret(&b);
        assert_eq!(again.verifying_key(), sk.verifying_key());
    }
}
