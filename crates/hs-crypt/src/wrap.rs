//! Wrapping small secrets (master keys) to age X25519 recipients.

use std::io::{Read, Write};
use std::str::FromStr;

use hs_base::code;

use crate::error::{Error, ErrorKind, Result};
use crate::keyring::Keyring;

/// Encrypts `secret` to every recipient (`age1...` strings) with age.
///
/// Any one of the matching identities can [`unwrap_secret`] the result.
/// Errors with `usage.recipient_invalid` for an empty list or a malformed
/// recipient.
pub fn wrap_secret(secret: &[u8], recipients: &[String]) -> Result<Vec<u8>> {
    if recipients.is_empty() {
        return Err(recipient_invalid(
            "at least one age recipient is required".to_owned(),
        ));
    }
    let parsed = recipients
        .iter()
        .map(|r| {
            age::x25519::Recipient::from_str(r.trim())
                .map_err(|why| recipient_invalid(format!("invalid age recipient {r:?}: {why}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let encryptor =
        age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| internal("cannot set up age encryption", e))?;
    let mut out = Vec::with_capacity(secret.len() + 256 * recipients.len());
    let mut w = encryptor
        .wrap_output(&mut out)
        .map_err(|e| internal("cannot write age header", e))?;
    w.write_all(secret)
        .and_then(|()| w.finish().map(drop))
        .map_err(|e| internal("cannot write age payload", e))?;
    Ok(out)
}

/// Decrypts a [`wrap_secret`] result with the keyring's identity.
///
/// Errors with `auth.keyring_no_matching_identity` if it was not wrapped to
/// this keyring, `verify.wrapped_secret_corrupt` if it is not a well-formed,
/// unmodified age file.
pub fn unwrap_secret(wrapped: &[u8], keyring: &Keyring) -> Result<Vec<u8>> {
    let decryptor = age::Decryptor::new_buffered(wrapped).map_err(corrupt)?;
    let mut reader = decryptor
        .decrypt(std::iter::once(keyring.identity() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => Error::of_kind(
                ErrorKind::NoMatchingIdentity,
                code::AUTH_KEYRING_NO_MATCHING_IDENTITY,
                format!(
                    "the key object is not wrapped to this keyring's identity ({}, keyring {})",
                    keyring.recipient(),
                    keyring.path().display()
                ),
            )
            .with_suggestion(
                "use the keyring that created the repository (--keyring or \
                 $PG_HARDSTORAGE_KEYRING); see `pg_hardstorage key list`",
            ),
            other => corrupt(other),
        })?;
    let mut secret = Vec::new();
    if let Err(e) = reader.read_to_end(&mut secret) {
        zeroize::Zeroize::zeroize(&mut secret);
        return Err(corrupt(age::DecryptError::Io(e)));
    }
    Ok(secret)
}

fn recipient_invalid(message: String) -> Error {
    Error::of_kind(
        ErrorKind::RecipientInvalid,
        code::USAGE_RECIPIENT_INVALID,
        message,
    )
    .with_suggestion("an age recipient looks like `age1...`; see `pg_hardstorage key list`")
}

fn corrupt(e: age::DecryptError) -> Error {
    Error::of_kind(
        ErrorKind::WrappedSecretCorrupt,
        code::VERIFY_WRAPPED_SECRET_CORRUPT,
        format!("wrapped key is corrupt or was modified: {e}"),
    )
    .with_suggestion("the key object is corrupt or was modified; run `pg_hardstorage repo verify`")
    .with_source(e)
}

fn internal(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::of_kind(
        ErrorKind::Internal,
        code::INTERNAL_WRAP_FAILED,
        format!("{what}: {e}"),
    )
    .with_source(e)
}
