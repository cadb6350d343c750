//! Key objects: wrapping the master key for another age recipient, listing
//! the key objects, and rotating the local keyring's identity.
//!
//! Every key object `keys/<id>` (an age file, see repo.rs) has a sealed
//! description `keyinfo/<id>` (domain `key-object`): which recipient it was
//! wrapped to and when, so that anyone who opened the repository can list
//! every key object's recipient, not only the ones their keyring opens.
//! The description is written before its key object; a description without a
//! key object is left over from an interrupted write and is ignored.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use hs_base::code;
use hs_crypt::{Domain, Keyring, MasterKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::repo::{now_rfc3339, KeyPayload, Repository};

const KEY_INFO_VERSION: u32 = 1;
/// Prefix of key objects.
pub(crate) const KEYS_PREFIX: &str = "keys/";
/// Prefix of key descriptions.
pub(crate) const KEY_INFO_PREFIX: &str = "keyinfo/";

/// One key object of the repository, as [`Repository::list_keys`] sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The object's name, `keys/<id>`.
    pub name: String,
    /// The age recipient (`age1...`) the master key is wrapped to, when
    /// recorded in the key's description.
    pub recipient: Option<String>,
    /// When the key object was written (RFC 3339 UTC), when known.
    pub created: Option<String>,
    /// Whether the keyring the repository was opened with can unwrap it.
    pub opens_with_keyring: bool,
}

/// What [`Repository::rotate_keyring`] did.
#[derive(Clone, Debug, Serialize)]
pub struct KeyRotation {
    /// The keyring file, which now holds the new identity.
    pub keyring: PathBuf,
    /// Where the old keyring file was kept.
    pub old_keyring: PathBuf,
    /// The old identity's recipient.
    pub old_recipient: String,
    /// The new identity's recipient.
    pub new_recipient: String,
    /// The key object written for the new identity.
    pub added: String,
    /// Key objects deleted because only the old identity could open them.
    pub removed: Vec<String>,
}

/// The sealed description of one key object.
#[derive(Serialize, Deserialize)]
struct KeyDescription {
    version: u32,
    key: String,
    recipient: String,
    created: String,
}

/// `keys/<id>` -> `keyinfo/<id>`.
pub(crate) fn key_info_name(key_name: &str) -> String {
    let id = key_name.strip_prefix(KEYS_PREFIX).unwrap_or(key_name);
    format!("{KEY_INFO_PREFIX}{id}")
}

/// Wraps `payload` for `recipient` and stores it as a new key object, after
/// its sealed description. Returns the key object's name.
pub(crate) async fn put_key_object(
    backend: &dyn Backend,
    master: &MasterKey,
    payload: &KeyPayload,
    recipient: &str,
) -> Result<String> {
    let plain = Zeroizing::new(serde_json::to_vec(payload).map_err(|e| {
        Error::new(code::IO_ENCODE_FAILED, "could not encode key object").with_source(e)
    })?);
    let wrapped = hs_crypt::wrap_secret(&plain, &[recipient.to_string()])?;
    let key_name = format!("{KEYS_PREFIX}{}", blake3::hash(&wrapped).to_hex());
    let desc = KeyDescription {
        version: KEY_INFO_VERSION,
        key: key_name.clone(),
        recipient: recipient.trim().to_string(),
        created: payload.created.clone(),
    };
    let json = serde_json::to_vec(&desc).map_err(|e| {
        Error::new(code::IO_ENCODE_FAILED, "could not encode key description").with_source(e)
    })?;
    let sealed = master.seal(Domain::KeyObject, &json);
    backend
        .put_if_absent(&key_info_name(&key_name), Bytes::from(sealed))
        .await?;
    backend
        .put_if_absent(&key_name, Bytes::from(wrapped))
        .await?;
    Ok(key_name)
}

/// How a key object relates to a keyring.
pub(crate) enum KeyCheck {
    /// The keyring opens it and it holds this repository's master key.
    Opens,
    /// It is wrapped to another identity.
    Foreign,
}

impl Repository {
    /// Opens key object `name` (`wrapped` is its content) with `keyring` and
    /// checks it holds this repository's master key and verifying key.
    pub(crate) fn check_key_object(
        &self,
        name: &str,
        wrapped: &[u8],
        keyring: &Keyring,
    ) -> Result<KeyCheck> {
        let plain = match hs_crypt::unwrap_secret(wrapped, keyring) {
            Ok(p) => Zeroizing::new(p),
            Err(e) if e.code() == code::AUTH_KEYRING_NO_MATCHING_IDENTITY => {
                return Ok(KeyCheck::Foreign)
            }
            Err(e) => return Err(e),
        };
        let bad = |what: &str| {
            Error::new(
                code::VERIFY_KEY_OBJECT_INVALID,
                format!("key object {name} {what}"),
            )
        };
        let p: KeyPayload =
            serde_json::from_slice(&plain).map_err(|_| bad("is not a valid key payload"))?;
        if p.repo_id != self.id() {
            return Err(bad("belongs to another repository"));
        }
        let mk = Zeroizing::new(hex::decode(&p.master_key).map_err(|_| bad("is malformed"))?);
        let ours = Zeroizing::new(self.inner.master.to_bytes());
        if mk != ours {
            return Err(bad("holds another master key"));
        }
        if p.verifying_key != self.inner.verifying.to_hex() {
            return Err(bad("records another verifying key"));
        }
        Ok(KeyCheck::Opens)
    }

    /// Reads and checks the sealed description of key object `key_name`;
    /// `Ok(None)` if there is none.
    pub(crate) async fn key_description(&self, key_name: &str) -> Result<Option<(String, String)>> {
        let info = key_info_name(key_name);
        let sealed = match self.inner.backend.get(&info).await {
            Ok(b) => b,
            Err(e) if e.code() == code::NOTFOUND_OBJECT => return Ok(None),
            Err(e) => return Err(e),
        };
        let plain = self.inner.master.open(Domain::KeyObject, &sealed)?;
        let d: KeyDescription = serde_json::from_slice(&plain).map_err(|_| {
            Error::new(
                code::VERIFY_KEY_OBJECT_INVALID,
                format!("key description {info} is malformed"),
            )
        })?;
        if d.version != KEY_INFO_VERSION || d.key != key_name {
            return Err(Error::new(
                code::VERIFY_KEY_OBJECT_INVALID,
                format!("key description {info} does not describe {key_name}"),
            ));
        }
        Ok(Some((d.recipient, d.created)))
    }

    /// Wraps the master key for another age recipient (`age1...`): a new key
    /// object, so whoever holds that identity can open the repository (and
    /// restore; signing new backups needs the original signing key). Nothing
    /// else changes. `usage.recipient_invalid` for a malformed recipient.
    pub async fn add_key(&self, recipient: &str) -> Result<KeyInfo> {
        let created = now_rfc3339();
        let payload = KeyPayload {
            version: 1,
            repo_id: self.id().to_string(),
            master_key: hex::encode(self.inner.master.to_bytes()),
            verifying_key: self.inner.verifying.to_hex(),
            created: created.clone(),
            // The digest sealed at init carries over; a repository from before it existed
            // gets the marker as it is now.
            marker_blake3: Some(
                self.inner
                    .marker_sealed
                    .clone()
                    .unwrap_or_else(|| self.inner.marker_digest.clone()),
            ),
        };
        let name = put_key_object(
            &*self.inner.backend,
            &self.inner.master,
            &payload,
            recipient,
        )
        .await;
        let KeyPayload { master_key, .. } = payload;
        drop(Zeroizing::new(master_key));
        let name = name?;
        Ok(KeyInfo {
            name,
            recipient: Some(recipient.trim().to_string()),
            created: Some(created),
            opens_with_keyring: recipient.trim() == self.inner.signer.recipient(),
        })
    }

    /// Every key object, sorted by creation time (then name), with the
    /// recipient from its description (or the keyring's own recipient when
    /// the keyring opens it).
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for o in self.inner.backend.list(KEYS_PREFIX).await? {
            let wrapped = self.inner.backend.get(&o.name).await?;
            let opens = matches!(
                self.check_key_object(&o.name, &wrapped, &self.inner.signer),
                Ok(KeyCheck::Opens)
            );
            let (mut recipient, mut created) = match self.key_description(&o.name).await {
                Ok(Some((r, c))) => (Some(r), Some(c)),
                _ => (None, None),
            };
            if opens && recipient.is_none() {
                recipient = Some(self.inner.signer.recipient());
            }
            if created.is_none() {
                created = o.modified.and_then(|t| {
                    time::OffsetDateTime::from_unix_timestamp(t)
                        .ok()
                        .and_then(|t| {
                            t.format(&time::format_description::well_known::Rfc3339)
                                .ok()
                        })
                });
            }
            out.push(KeyInfo {
                name: o.name,
                recipient,
                created,
                opens_with_keyring: opens,
            });
        }
        out.sort_by(|a, b| (&a.created, &a.name).cmp(&(&b.created, &b.name)));
        Ok(out)
    }

    /// Rotates the keyring this repository was opened with: a new keyring
    /// with a fresh age identity (and the same signing key) is written next
    /// to it, the master key is wrapped for the new identity, the repository
    /// is opened with the new keyring to prove it works, the keyring file is
    /// atomically replaced by the new one (the old file is kept at
    /// `keep_old`, default `<keyring>.old-<UTC timestamp>`, mode 0600), and
    /// finally the key objects that only the old identity could open are
    /// deleted. Data is never re-encrypted. The repository can be opened at
    /// every step: new keys are written before old ones are deleted.
    pub async fn rotate_keyring(&self, keep_old: Option<&Path>) -> Result<KeyRotation> {
        let old = &self.inner.signer;
        let path = old.path().to_path_buf();
        let stamp = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_default();
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "keyring".to_string());
        let keep_old = keep_old
            .map(Path::to_path_buf)
            .unwrap_or_else(|| path.with_file_name(format!("{file}.old-{stamp}")));
        if keep_old.exists() {
            return Err(Error::new(
                code::CONFLICT_KEYRING_EXISTS,
                format!("{} already exists", keep_old.display()),
            )
            .with_suggestion("move it away, or wait a second and rotate again"));
        }
        let staged = path.with_file_name(format!(".{file}.new-{stamp}"));
        let new = old.create_with_new_identity(&staged)?;
        let staged_cleanup = |e: Error| {
            let _ = std::fs::remove_file(&staged);
            e
        };
        let added = self
            .add_key(&new.recipient())
            .await
            .map_err(staged_cleanup)?;
        // Prove the new keyring opens the repository before anything is replaced.
        Repository::open(self.url(), &new)
            .await
            .map_err(staged_cleanup)?;
        let new = new.replace(&path, Some(&keep_old))?;

        let mut removed = Vec::new();
        let mut new_opens = 0usize;
        let mut only_old = Vec::new();
        for o in self.inner.backend.list(KEYS_PREFIX).await? {
            let wrapped = self.inner.backend.get(&o.name).await?;
            let by_new = matches!(
                self.check_key_object(&o.name, &wrapped, &new),
                Ok(KeyCheck::Opens)
            );
            let by_old = matches!(
                self.check_key_object(&o.name, &wrapped, old),
                Ok(KeyCheck::Opens)
            );
            if by_new {
                new_opens += 1;
            } else if by_old {
                only_old.push(o.name);
            }
        }
        if new_opens == 0 {
            return Err(Error::new(
                code::VERIFY_KEY_OBJECT_INVALID,
                "no key object opens with the new keyring; nothing was deleted",
            )
            .with_suggestion(format!(
                "the old keyring is kept at {}; run `pg_hardstorage repo verify`",
                keep_old.display()
            )));
        }
        for name in only_old {
            self.inner.backend.delete(&name).await?;
            self.inner.backend.delete(&key_info_name(&name)).await?;
            removed.push(name);
        }
        Ok(KeyRotation {
            keyring: path,
            old_keyring: keep_old,
            old_recipient: old.recipient(),
            new_recipient: new.recipient(),
            added: added.name,
            removed,
        })
    }
}
