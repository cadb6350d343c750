//! Storage backends: the object-store trait [`Backend`], the URL dispatch
//! [`open_backend`], and one module per store:
//!
//! - `fs`: `file://`, crash-safe via temp file + fsync + link/rename + dir fsync;
//! - `object`: `s3://`, `gcs://`, `azblob://` (opendal);
//! - `ssh`: the shared OpenSSH control-master connection and URL parsing of
//!   `sftp://`/`scp://`, used by `sftp` (SFTP protocol) and `scp` (POSIX shell
//!   over ssh exec);
//! - `retry` and `fault`: wrappers around any store (retries with backoff;
//!   injected faults for tests);
//! - `trace`: one line per call appended to the file `$HS_STORAGE_TRACE` names
//!   (off unless set; for `cargo xtask bench requests`).

mod fault;
mod fs;
mod object;
mod retry;
mod scp;
mod sftp;
mod ssh;
mod trace;

pub use fault::{FaultBackend, FaultConfig, FaultCounts};
pub use fs::FsBackend;
pub use object::{ObjectBackend, MULTIPART_THRESHOLD};
pub use retry::{RetryBackend, RetryPolicy};

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use hs_base::code;

use crate::error::{Error, Result};

/// Name and size of one stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Object name relative to the repository root, `/`-separated.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time in Unix seconds, when the store reports one.
    pub modified: Option<i64>,
}

/// An object store keyed by `/`-separated names (see docs/repository-format.md
/// for the layout). Objects are written whole and, apart from the explicit
/// [`put`](Backend::put), never replaced.
///
/// Names consist of segments of ASCII letters, digits, `.`, `_` and `-`,
/// none empty or starting with `.`; anything else is `usage.invalid_object_name`.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Where the objects live, for messages (a URL without credentials).
    fn location(&self) -> &str;

    /// How many bytes of a pack a reader fetches in one range read when it reads the
    /// pack's frames (restore, verification): a frame is read with the frames that
    /// start in the same window of this many bytes. 0 (the default, and `file://`)
    /// reads each frame on its own. Stores that pay a round trip per request (object
    /// stores, SSH) return [`REMOTE_READ_WINDOW`].
    fn read_window(&self) -> u32 {
        0
    }

    /// Stores `data` under `name` only if no object of that name exists.
    /// Returns `false` (and changes nothing) if one does. When this returns
    /// `true` the object is durable.
    async fn put_if_absent(&self, name: &str, data: Bytes) -> Result<bool>;

    /// Stores `data` under `name`, atomically replacing any existing object.
    async fn put(&self, name: &str, data: Bytes) -> Result<()>;

    /// The whole object; `notfound.object` if it does not exist.
    async fn get(&self, name: &str) -> Result<Bytes>;

    /// `len` bytes of the object from `offset`; `verify.object_truncated` if
    /// the object is shorter.
    async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Bytes>;

    /// All objects whose name starts with `prefix`, sorted by name.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// Removes an object; removing a missing object is not an error.
    async fn delete(&self, name: &str) -> Result<()>;

    /// Size of an object, or `None` if it does not exist.
    async fn stat(&self, name: &str) -> Result<Option<ObjectInfo>>;

    /// Deletes the temporary files (`.tmp-*`) of writes whose writer died before
    /// publishing them, if older than `older_than`; returns how many. Stores that
    /// publish atomically without temporaries (the object stores) have none.
    async fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<u64> {
        let _ = older_than;
        Ok(0)
    }
}

/// [`Backend::read_window`] of the stores with a round trip per request (1 MiB): a
/// restore from one makes about one request per twenty frames of pages, where it made
/// one per frame.
pub const REMOTE_READ_WINDOW: u32 = 1 << 20;

/// Opens the backend for a repository URL: `file:///absolute/path`,
/// `s3://`, `gcs://`, `azblob://` (see [`ObjectBackend`]), `sftp://` and
/// `scp://`. Every store but `file://` is wrapped in a [`RetryBackend`] with
/// the default [`RetryPolicy`]; with `$HS_STORAGE_TRACE` set, every store is also
/// wrapped in a `TraceBackend` (`backend/trace.rs`).
pub fn open_backend(url: &str) -> Result<Arc<dyn Backend>> {
    open_backend_untraced(url).map(trace::TraceBackend::from_env)
}

fn open_backend_untraced(url: &str) -> Result<Arc<dyn Backend>> {
    // Messages show the URL without credentials (crate::redact_url).
    let shown = crate::redact_url(url);
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(Error::new(
            code::USAGE_INVALID_URL,
            format!("{shown:?} is not a repository URL"),
        )
        .with_suggestion(
            "write it as file:///absolute/path, s3://bucket/prefix, gcs://bucket/prefix, \
             azblob://account.blob.core.windows.net/container/prefix or sftp://user@host/path",
        ));
    };
    let retrying = |b: Arc<dyn Backend>| -> Arc<dyn Backend> {
        Arc::new(RetryBackend::new(b, RetryPolicy::default()))
    };
    match scheme {
        "file" => {
            if !rest.starts_with('/') {
                return Err(Error::new(
                    code::USAGE_INVALID_URL,
                    format!("file URL {shown:?} must have an absolute path and no host"),
                )
                .with_suggestion("write it as file:///absolute/path (three slashes)"));
            }
            if rest.contains(['?', '#', '%']) {
                return Err(Error::new(
                    code::USAGE_INVALID_URL,
                    format!("file URL {shown:?} has a query, fragment or percent-escape"),
                )
                .with_suggestion("use a plain absolute path without ?, # or %"));
            }
            Ok(Arc::new(FsBackend::new(url, Path::new(rest))))
        }
        "s3" | "gcs" | "azblob" => Ok(retrying(object::open(url)?)),
        "sftp" | "scp" => Ok(retrying(ssh::open(url)?)),
        other => Err(Error::new(
            code::USAGE_UNSUPPORTED_SCHEME,
            format!(
                "repository URL scheme {:?} is not supported",
                crate::redact_url(other)
            ),
        )
        .with_suggestion("use file://, s3://, gcs://, azblob://, sftp:// or scp://")),
    }
}

/// Name of the object [`probe_conditional_writes`] writes and deletes.
pub const PROBE_NAME: &str = "locks/conditional-write-probe";

/// Checks that `b` honours create-if-absent: writes a probe object twice with
/// `put_if_absent` and deletes it. Returns a warning when the second write
/// also reported success (the store ignores conditional writes, so two
/// concurrent `repo init`s or backups could overwrite each other's objects).
pub async fn probe_conditional_writes(b: &dyn Backend) -> Result<Option<String>> {
    let mut nonce = [0u8; 16];
    rand::Rng::fill(&mut rand::thread_rng(), &mut nonce);
    let name = format!("{PROBE_NAME}-{}", hex::encode(nonce));
    let first = b
        .put_if_absent(&name, Bytes::from_static(b"probe 1"))
        .await?;
    let second = b.put_if_absent(&name, Bytes::from_static(b"probe 2")).await;
    let deleted = b.delete(&name).await;
    let second = second?;
    deleted?;
    Ok(if first && second {
        Some(format!(
            "the store at {} ignores conditional writes (create-if-absent); \
             concurrent writers could overwrite each other's markers and manifests",
            b.location()
        ))
    } else {
        None
    })
}

/// The directory part of a listing `prefix`: everything before its last `/`
/// (`""` at the root), checked as an object name.
pub(crate) fn list_dir(prefix: &str) -> Result<&str> {
    let dir_part = match prefix.rfind('/') {
        Some(i) => &prefix[..i],
        None => "",
    };
    if !dir_part.is_empty() {
        check_name(dir_part)?;
    }
    Ok(dir_part)
}

/// `len` as a buffer size; `usage.range_too_large` when it does not fit in memory.
pub(crate) fn range_len(len: u64) -> Result<usize> {
    usize::try_from(len).map_err(|_| {
        Error::new(
            code::USAGE_RANGE_TOO_LARGE,
            "requested range does not fit in memory",
        )
    })
}

/// `verify.object_truncated`: object `name` ends before byte `end` of a ranged read.
pub(crate) fn truncated(name: &str, end: u64) -> Error {
    Error::new(
        code::VERIFY_OBJECT_TRUNCATED,
        format!("object {name} is shorter than {end} bytes"),
    )
    .with_suggestion("run a repository check; the object was truncated")
}

/// Checks an object name.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 1024
        && name.split('/').all(|seg| {
            !seg.is_empty()
                && !seg.starts_with('.')
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            code::USAGE_INVALID_OBJECT_NAME,
            format!("{name:?} is not a valid object name"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_urls() {
        assert!(check_name("data/ab/abcdef").is_ok());
        assert!(check_name("config").is_ok());
        for bad in [
            "", "/abs", "a//b", "../x", "a/../b", "a/.tmp-x", "a b", "a/",
        ] {
            assert_eq!(
                check_name(bad).unwrap_err().code(),
                "usage.invalid_object_name",
                "{bad}"
            );
        }
        assert_eq!(
            open_backend("ftp://host/x").err().unwrap().code(),
            "usage.unsupported_scheme"
        );
        assert!(open_backend("ftp://host/x")
            .err()
            .unwrap()
            .suggestion()
            .unwrap()
            .contains("s3://"));
        assert!(open_backend("s3://bucket/p?region=eu-west-1").is_ok());
        for bad in [
            "s3://bucket/p?secret_key=x",
            "s3://bucket/p?addressing=sideways",
            "s3:///p",
            "s3://bucket/a b",
            "gcs://b/p?anonymous=maybe",
            "azblob://acct.blob.core.windows.net",
            "s3://bucket/p#frag",
            "s3://bucket/p?endpoint=%zz",
        ] {
            assert_eq!(
                open_backend(bad).err().unwrap().code(),
                "usage.invalid_url",
                "{bad}"
            );
        }
        assert_eq!(
            open_backend("file://relative/x").err().unwrap().code(),
            "usage.invalid_url"
        );
        assert_eq!(
            open_backend("/just/a/path").err().unwrap().code(),
            "usage.invalid_url"
        );
        assert!(open_backend("file:///tmp/x").is_ok());
    }
}
