//! The local keyring file: an age X25519 identity and an ed25519 signing key.
//!
//! Format (JSON, mode 0600):
//! `{"version":1,"age_identity":"AGE-SECRET-KEY-1...","signing_key":"<64 hex>"}`.
//!
//! An identity file as `age-keygen` writes it (`#` comment lines and one
//! `AGE-SECRET-KEY-1...` line) is read as a keyring too. It has no signing key, so one
//! is derived from the identity (BLAKE3 `derive_key`, context `AGE_FILE_SIGNING_CONTEXT`):
//! such a keyring opens every repository that has a key object for its recipient (list,
//! verify, restore), and writing backups with it is refused with
//! `auth.signing_key_mismatch` unless the repository was initialised with it.

use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use hs_base::code;
use hs_base::fs::{parent_dir, sync_dir};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, ErrorKind, Result};
use crate::sign::SigningKey;

/// The only keyring file format version.
const KEYRING_VERSION: u32 = 1;
/// A keyring is a few hundred bytes; anything much larger is not one.
const MAX_KEYRING_LEN: u64 = 64 * 1024;

/// The local secrets of one operator or host: an age X25519 identity (which
/// unwraps repository master keys) and an ed25519 signing key (which signs
/// manifests). `Debug` shows the path and the public recipient only.
pub struct Keyring {
    path: PathBuf,
    identity: age::x25519::Identity,
    signing_key: SigningKey,
}

#[derive(Serialize, Deserialize)]
struct KeyringFile {
    version: u32,
    age_identity: String,
    signing_key: String,
}

impl Drop for KeyringFile {
    fn drop(&mut self) {
        self.age_identity.zeroize();
        self.signing_key.zeroize();
    }
}

impl Keyring {
    /// Where the keyring lives unless told otherwise: `$PG_HARDSTORAGE_KEYRING`
    /// if set, else `$XDG_CONFIG_HOME/pg_hardstorage/keyring`, else
    /// `~/.config/pg_hardstorage/keyring`.
    pub fn default_path() -> PathBuf {
        default_path_from(
            std::env::var_os("PG_HARDSTORAGE_KEYRING"),
            std::env::var_os("XDG_CONFIG_HOME"),
            std::env::var_os("HOME"),
        )
    }

    /// Reads a keyring file.
    ///
    /// Errors: `notfound.keyring` if missing, `preflight.keyring_permissions`
    /// if group or others have any access, `usage.keyring_invalid` if it does
    /// not parse, `io.keyring_read_failed` on other I/O failures.
    pub fn load(path: &Path) -> Result<Keyring> {
        let mut file = File::open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::of_kind(
                    ErrorKind::KeyringNotFound,
                    code::NOTFOUND_KEYRING,
                    format!("no keyring at {}", path.display()),
                )
                .with_suggestion(
                    "pass --keyring <path> (or set PG_HARDSTORAGE_KEYRING) to a keyring that \
                     opens the repository; only a new repository gets one from \
                     `pg_hardstorage repo init`",
                )
                .with_source(e)
            } else {
                crate::error::keyring_io(
                    code::IO_KEYRING_READ_FAILED,
                    format!("cannot open keyring {}", path.display()),
                    e,
                )
            }
        })?;
        // Check the mode of the file we opened, not of whatever the path names now.
        let meta = file.metadata().map_err(|e| {
            crate::error::keyring_io(
                code::IO_KEYRING_READ_FAILED,
                format!("cannot stat keyring {}", path.display()),
                e,
            )
        })?;
        if !meta.is_file() {
            return Err(invalid(path, "not a regular file"));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::of_kind(
                ErrorKind::KeyringPermissions,
                code::PREFLIGHT_KEYRING_PERMISSIONS,
                format!(
                    "keyring {} has mode {mode:04o}; it must not be accessible by group or others",
                    path.display()
                ),
            )
            .with_suggestion(format!("chmod 600 {}", path.display())));
        }
        let mut text = Zeroizing::new(String::new());
        (&mut file)
            .take(MAX_KEYRING_LEN + 1)
            .read_to_string(&mut text)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    invalid(path, "not UTF-8 text")
                } else {
                    crate::error::keyring_io(
                        code::IO_KEYRING_READ_FAILED,
                        format!("cannot read keyring {}", path.display()),
                        e,
                    )
                }
            })?;
        if text.len() as u64 > MAX_KEYRING_LEN {
            return Err(invalid(path, "file is too large"));
        }
        Keyring::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Keyring> {
        if !text.trim_start().starts_with('{') {
            return Keyring::parse_age_file(path, text);
        }
        // serde_json's messages can quote string values (secrets), so report
        // only the category and position.
        let f: KeyringFile = serde_json::from_str(text).map_err(|e| {
            invalid(
                path,
                &format!(
                    "not a valid keyring file ({:?} error at line {}, column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            )
        })?;
        if f.version != KEYRING_VERSION {
            return Err(invalid(
                path,
                &format!(
                    "unsupported keyring version {} (this build reads version {KEYRING_VERSION})",
                    f.version
                ),
            ));
        }
        let identity = age::x25519::Identity::from_str(&f.age_identity)
            .map_err(|_| invalid(path, "age_identity is not an AGE-SECRET-KEY-1 identity"))?;
        let mut secret = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(&f.signing_key, secret.as_mut())
            .map_err(|_| invalid(path, "signing_key is not 64 hex digits"))?;
        Ok(Keyring {
            path: path.to_path_buf(),
            identity,
            signing_key: SigningKey::from_secret(&secret),
        })
    }

    /// An `age-keygen` identity file: blank and `#` lines, exactly one
    /// `AGE-SECRET-KEY-1...` line. The signing key is derived from the identity.
    fn parse_age_file(path: &Path, text: &str) -> Result<Keyring> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let (Some(line), None) = (lines.next(), lines.next()) else {
            return Err(not_a_keyring(path));
        };
        if !line.starts_with("AGE-SECRET-KEY-1") {
            return Err(not_a_keyring(path));
        }
        let identity = age::x25519::Identity::from_str(line).map_err(|_| {
            invalid(
                path,
                "its AGE-SECRET-KEY-1 line is not a valid age identity",
            )
        })?;
        let secret = Zeroizing::new(blake3::derive_key(
            AGE_FILE_SIGNING_CONTEXT,
            line.as_bytes(),
        ));
        Ok(Keyring {
            path: path.to_path_buf(),
            identity,
            signing_key: SigningKey::from_secret(&secret),
        })
    }

    /// Creates a new keyring with a fresh identity and signing key.
    ///
    /// The file is created exclusively with mode 0600 (missing parent
    /// directories get 0700), written completely and fsynced. Errors with
    /// `conflict.keyring_exists` if the path exists, `io.keyring_write_failed`
    /// on I/O failures (a partial file is removed).
    pub fn create(path: &Path) -> Result<Keyring> {
        let keyring = Keyring {
            path: path.to_path_buf(),
            identity: age::x25519::Identity::generate(),
            signing_key: SigningKey::generate(),
        };
        keyring.write_new()?;
        Ok(keyring)
    }

    /// Creates a new keyring file at `path` (same rules as [`Keyring::create`])
    /// with a fresh age identity and a copy of this keyring's signing key: the
    /// first step of a key rotation, which changes the identity that unwraps
    /// the master key but keeps the key that signs (and verifies) manifests.
    pub fn create_with_new_identity(&self, path: &Path) -> Result<Keyring> {
        let mut secret = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(self.signing_key.secret_hex().as_str(), secret.as_mut()).map_err(
            |_| {
                Error::of_kind(
                    ErrorKind::Internal,
                    code::INTERNAL_KEYRING_ENCODE_FAILED,
                    "cannot copy the signing key",
                )
            },
        )?;
        let keyring = Keyring {
            path: path.to_path_buf(),
            identity: age::x25519::Identity::generate(),
            signing_key: SigningKey::from_secret(&secret),
        };
        keyring.write_new()?;
        Ok(keyring)
    }

    /// Moves this keyring's file to `dest`, atomically replacing whatever is
    /// there (`rename`), and fsyncs the directory. If `keep_old` is given and
    /// `dest` exists, the old file is first hard-linked there (same inode, so
    /// it keeps its 0600 mode); `keep_old` must not exist. Both paths must be
    /// on the file system of this keyring's file. Returns the keyring at `dest`.
    pub fn replace(self, dest: &Path, keep_old: Option<&Path>) -> Result<Keyring> {
        let write_err = |what: &str, e: std::io::Error| {
            crate::error::keyring_io(
                code::IO_KEYRING_WRITE_FAILED,
                format!("cannot {what} {}", dest.display()),
                e,
            )
        };
        if let Some(old) = keep_old {
            match std::fs::hard_link(dest, old) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(write_err("keep a copy of keyring", e)),
            }
        }
        // The second half of an atomic publication (hs_base::fs::AtomicFile): the
        // staged keyring was written and fsynced by `write_new`.
        std::fs::rename(&self.path, dest).map_err(|e| write_err("replace keyring", e))?;
        sync_dir(parent_dir(dest)).map_err(|e| write_err("sync the directory of keyring", e))?;
        Ok(Keyring {
            path: dest.to_path_buf(),
            identity: self.identity,
            signing_key: self.signing_key,
        })
    }

    /// Writes this keyring to its path: created exclusively with mode 0600
    /// (missing parent directories get 0700), written completely and fsynced.
    fn write_new(&self) -> Result<()> {
        let path = self.path.as_path();
        let write_err = |what: &str, e: std::io::Error| {
            crate::error::keyring_io(
                code::IO_KEYRING_WRITE_FAILED,
                format!("cannot {what} {}", path.display()),
                e,
            )
        };
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(parent) = parent {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| write_err("create the directory of keyring", e))?;
        }
        let file = KeyringFile {
            version: KEYRING_VERSION,
            age_identity: self.identity.to_string().expose_secret().to_owned(),
            signing_key: self.signing_key.secret_hex().to_string(),
        };
        let mut text = Zeroizing::new(serde_json::to_string(&file).map_err(|e| {
            Error::of_kind(
                ErrorKind::Internal,
                code::INTERNAL_KEYRING_ENCODE_FAILED,
                "cannot encode keyring",
            )
            .with_source(e)
        })?);
        text.push('\n');

        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::of_kind(
                        ErrorKind::KeyringExists,
                        code::CONFLICT_KEYRING_EXISTS,
                        format!("a keyring already exists at {}", path.display()),
                    )
                    .with_suggestion("use the existing keyring, or pass another --keyring path")
                    .with_source(e)
                } else {
                    write_err("create keyring", e)
                }
            })?;
        if let Err(e) = f.write_all(text.as_bytes()).and_then(|()| f.sync_all()) {
            drop(f);
            let _ = std::fs::remove_file(path);
            return Err(write_err("write keyring", e));
        }
        drop(f);
        // Make the new directory entry durable too.
        sync_dir(parent_dir(path)).map_err(|e| write_err("sync the directory of keyring", e))?;
        Ok(())
    }

    /// Loads the keyring at `path`, creating it first if it does not exist.
    /// Returns whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Keyring, bool)> {
        match Keyring::load(path) {
            Ok(k) => Ok((k, false)),
            Err(e) if e.kind() == ErrorKind::KeyringNotFound => match Keyring::create(path) {
                Ok(k) => Ok((k, true)),
                // Someone else created it between our load and create.
                Err(e) if e.kind() == ErrorKind::KeyringExists => {
                    Keyring::load(path).map(|k| (k, false))
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// The file this keyring was loaded from or created at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The public age recipient (`age1...`) that secrets for this keyring
    /// are wrapped to.
    pub fn recipient(&self) -> String {
        self.identity.to_public().to_string()
    }

    /// The ed25519 signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing_key
    }

    pub(crate) fn identity(&self) -> &age::x25519::Identity {
        &self.identity
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("path", &self.path)
            .field("recipient", &self.recipient())
            .finish_non_exhaustive()
    }
}

/// The BLAKE3 `derive_key` context of the signing key of an `age-keygen` identity file.
const AGE_FILE_SIGNING_CONTEXT: &str =
    "pg_hardstorage 2026-12-06 signing key of an age-keygen identity file";

/// Neither JSON nor an age identity file.
fn not_a_keyring(path: &Path) -> Error {
    Error::of_kind(
        ErrorKind::KeyringInvalid,
        code::USAGE_KEYRING_INVALID,
        format!(
            "keyring {} is invalid: it is neither a pg_hardstorage keyring (JSON) nor an age \
             identity file (one AGE-SECRET-KEY-1 line, as age-keygen writes it)",
            path.display()
        ),
    )
    .with_suggestion(
        "pass the keyring file `repo init` or `key generate` wrote, or an age-keygen identity \
         file; make a new recovery keyring with `pg_hardstorage key generate PATH`",
    )
}

fn invalid(path: &Path, why: &str) -> Error {
    Error::of_kind(
        ErrorKind::KeyringInvalid,
        code::USAGE_KEYRING_INVALID,
        format!("keyring {} is invalid: {why}", path.display()),
    )
    .with_suggestion("restore the keyring from your backup copy, or pass another --keyring path")
}

fn default_path_from(
    explicit: Option<std::ffi::OsString>,
    xdg_config_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    if let Some(p) = explicit.filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    // XDG: a relative XDG_CONFIG_HOME is invalid and must be ignored.
    let config = xdg_config_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            home.filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })
        .unwrap_or_else(|| PathBuf::from(".config"));
    config.join("pg_hardstorage").join("keyring")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<std::ffi::OsString> {
        Some(s.into())
    }

    #[test]
    fn default_path_precedence() {
        assert_eq!(
            default_path_from(os("/k/ring"), os("/x"), os("/h")),
            PathBuf::from("/k/ring")
        );
        assert_eq!(
            default_path_from(os(""), os("/x"), os("/h")),
            PathBuf::from("/x/pg_hardstorage/keyring")
        );
        assert_eq!(
            default_path_from(None, os("relative"), os("/h")),
            PathBuf::from("/h/.config/pg_hardstorage/keyring")
        );
        assert_eq!(
            default_path_from(None, None, os("/h")),
            PathBuf::from("/h/.config/pg_hardstorage/keyring")
        );
    }

    #[test]
    fn an_age_keygen_identity_file_is_a_keyring_with_a_derived_signing_key() {
        let id = age::x25519::Identity::generate();
        let secret = id.to_string().expose_secret().to_owned();
        let public = id.to_public().to_string();
        let text = format!("# created: 2026-12-06T04:00:00Z\n# public key: {public}\n{secret}\n");
        let p = Path::new("/k");
        let a = Keyring::parse(p, &text).unwrap();
        assert_eq!(a.recipient(), public);
        // The same file gives the same signing key every time.
        let b = Keyring::parse(p, &text).unwrap();
        assert_eq!(
            a.signing_key().verifying_key(),
            b.signing_key().verifying_key()
        );
        // Two identities, or none, or something else: refused, without echoing secrets.
        for bad in [
            format!("{secret}\n{secret}\n"),
            "# nothing\n".to_owned(),
            "age1notasecret\n".to_owned(),
        ] {
            let e = Keyring::parse(p, &bad).unwrap_err();
            assert_eq!(e.code(), "usage.keyring_invalid");
            assert!(e.to_string().contains("age identity file"), "{e}");
            assert!(!e.to_string().contains(&secret));
        }
    }

    #[test]
    fn parse_rejects_bad_fields_without_echoing_them() {
        let p = Path::new("/k");
        let secret_looking = "AGE-SECRET-KEY-1NOTREALLYVALIDBUTSECRETISH";
        let text =
            format!(r#"{{"version":1,"age_identity":"{secret_looking}","signing_key":"00"}}"#);
        let e = Keyring::parse(p, &text).unwrap_err();
        assert_eq!(e.code(), "usage.keyring_invalid");
        assert!(!e.to_string().contains(secret_looking));
        let e =
            Keyring::parse(p, r#"{"version":2,"age_identity":"","signing_key":""}"#).unwrap_err();
        assert_eq!(e.code(), "usage.keyring_invalid");
        assert!(e.to_string().contains("version 2"));
    }
}
