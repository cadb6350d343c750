//! The marker and the key objects.

use std::collections::HashSet;

use super::{base_name, VerifyReport};
use crate::error::Result;
use crate::keys::{KeyCheck, KEYS_PREFIX, KEY_INFO_PREFIX};
use crate::repo::{Repository, MARKER_NAME};

impl Repository {
    pub(super) async fn verify_marker(&self, report: &mut VerifyReport) -> Result<()> {
        let since = report.events;
        let raw = self.inner.backend.get(MARKER_NAME).await?;
        report.bytes_read += raw.len() as u64;
        let ok = serde_json::from_slice::<serde_json::Value>(&raw).is_ok_and(|v| {
            v["format"] == crate::repo::MARKER_FORMAT
                && v["version"].as_u64().is_some_and(|n| {
                    (u64::from(crate::repo::MIN_REPO_VERSION)
                        ..=u64::from(crate::repo::REPO_VERSION))
                        .contains(&n)
                })
                && v["repo_id"] == self.id()
        });
        let digest = blake3::hash(&raw).to_hex().to_string();
        if !ok {
            report.problem(
                "verify.marker_invalid",
                MARKER_NAME,
                "the marker no longer parses or names another format, version or repository id",
            );
        } else {
            match &self.inner.marker_sealed {
                Some(sealed) if *sealed != digest => report.problem(
                    "verify.marker_invalid",
                    MARKER_NAME,
                    "the marker was modified after the repository was created: its BLAKE3 \
                     differs from the one sealed in the key objects (restore it from a copy; \
                     it is plaintext JSON)",
                ),
                Some(_) => {}
                None => report.warn(
                    "verify.marker_unsealed",
                    MARKER_NAME,
                    "the key object that opened the repository predates sealed marker digests, \
                     so a change to the marker cannot be detected; `pg_hardstorage key rotate` \
                     writes key objects that carry it",
                ),
            }
        }
        report.check(
            "marker",
            1,
            since,
            "the plaintext marker parses, matches and has the digest sealed at init",
        );
        Ok(())
    }

    pub(super) async fn verify_keys(&self, report: &mut VerifyReport) -> Result<()> {
        let since = report.events;
        let keys = self.inner.backend.list(KEYS_PREFIX).await?;
        let mut opens = 0;
        let mut names = HashSet::new();
        for o in &keys {
            let Some(wrapped) = self.get_listed(&o.name).await? else {
                continue;
            };
            names.insert(o.name.clone());
            report.bytes_read += wrapped.len() as u64;
            if blake3::hash(&wrapped).to_hex().as_str() != base_name(&o.name) {
                report.problem(
                    "verify.key_object_invalid",
                    &o.name,
                    "its content does not match its name (BLAKE3 of the object)",
                );
            }
            match self.check_key_object(&o.name, &wrapped, &self.inner.signer) {
                Ok(KeyCheck::Opens) => opens += 1,
                Ok(KeyCheck::Foreign) => {}
                Err(e) => report.problem(
                    "verify.key_object_invalid",
                    &o.name,
                    format!("{e} ({})", e.code()),
                ),
            }
            if let Err(e) = self.key_description(&o.name).await {
                report.problem(
                    "verify.key_object_invalid",
                    &crate::keys::key_info_name(&o.name),
                    format!("{e} ({})", e.code()),
                );
            }
        }
        if opens == 0 {
            report.problem(
                "verify.key_object_invalid",
                KEYS_PREFIX,
                "no key object opens with this keyring any more",
            );
        }
        for o in self.inner.backend.list(KEY_INFO_PREFIX).await? {
            let key = format!("{KEYS_PREFIX}{}", &o.name[KEY_INFO_PREFIX.len()..]);
            if !names.contains(&key) {
                report.warn(
                    "verify.key_description_orphan",
                    &o.name,
                    "a key description without its key object (an interrupted `key add`)",
                );
            }
        }
        report.check(
            "keys",
            keys.len() as u64,
            since,
            "key objects are intact and hold this repository's master key",
        );
        Ok(())
    }
}
