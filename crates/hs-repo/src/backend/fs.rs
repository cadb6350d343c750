//! `file://`: the repository in a local (or locally mounted) directory.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use hs_base::code;
use hs_base::fs::{parent_dir, sync_dir, temp_path, AtomicFile};

use super::{check_name, list_dir, range_len, truncated, Backend, ObjectInfo};
use crate::error::{Error, Result};

fn unix_secs(m: &fs::Metadata) -> Option<i64> {
    let t = m.modified().ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_secs()).ok()
}

/// A repository in a local (or locally mounted) directory.
///
/// Crash safety: every write goes to a temporary file in the target's
/// directory, is written fully and fsynced, then published with `link(2)`
/// (create-if-absent: an existing name fails with `EEXIST`) or `rename(2)`
/// (replace), and the directory is fsynced. Directories created on the way
/// are fsynced into their parents. Temporary files start with `.tmp-` and
/// are never listed.
#[derive(Debug, Clone)]
pub struct FsBackend {
    url: String,
    root: PathBuf,
}

impl FsBackend {
    /// A backend rooted at `root` (created on first write); `url` is only
    /// used in messages.
    pub fn new(url: &str, root: &Path) -> FsBackend {
        FsBackend {
            url: crate::redact_url(url),
            root: root.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        Ok(self.root.join(name))
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(f).await.map_err(|e| {
            Error::new(
                code::ABORTED_TASK_FAILED,
                "a storage task panicked or was cancelled",
            )
            .with_source(e)
        })?
    }

    /// Both writes, through [`AtomicFile`]: a `.tmp-` file in the object's
    /// directory (created with its missing ancestors), published with `link(2)`
    /// when `if_absent` (returns `false` if the name exists) or `rename(2)`.
    async fn write(&self, name: &str, data: Bytes, if_absent: bool) -> Result<bool> {
        let path = self.path(name)?;
        let root = self.root.clone();
        let name = name.to_string();
        Self::blocking(move || {
            ensure_dir(&root, parent_dir(&path)).map_err(|e| Error::io(e, true, &name))?;
            let tmp = temp_path(&path, ".tmp-", rand::random());
            let file = AtomicFile::new(&path, &tmp);
            let file = if if_absent { file.if_absent() } else { file };
            file.write(&data).map_err(|e| Error::io(e, true, &name))
        })
        .await
    }
}

/// Creates `dir` and missing ancestors below `root`, fsyncing each new
/// directory's parent so the new entries are durable.
fn ensure_dir(root: &Path, dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.is_dir() {
        missing.push(d.to_path_buf());
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    fs::create_dir_all(dir)?;
    for m in missing.iter().rev() {
        if let Some(p) = m.parent() {
            // The root's own parent may be outside our control; best effort there.
            let r = sync_dir(p);
            if p.starts_with(root) {
                r?;
            }
        }
    }
    Ok(())
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<ObjectInfo>) -> std::io::Result<()> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    for ent in rd {
        let ent = ent?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue; // temp files and anything hidden
        }
        let child = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        // An entry deleted while we list (a released lease, a replaced index
        // object) is simply not listed.
        let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        let ft = match ent.file_type() {
            Ok(ft) => ft,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(e),
        };
        if ft.is_dir() {
            walk(&ent.path(), &child, out)?;
        } else if ft.is_file() {
            let m = match ent.metadata() {
                Ok(m) => m,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(e),
            };
            out.push(ObjectInfo {
                name: child,
                size: m.len(),
                modified: unix_secs(&m),
            });
        }
    }
    Ok(())
}

#[async_trait]
impl Backend for FsBackend {
    fn location(&self) -> &str {
        &self.url
    }

    async fn put_if_absent(&self, name: &str, data: Bytes) -> Result<bool> {
        self.write(name, data, true).await
    }

    async fn put(&self, name: &str, data: Bytes) -> Result<()> {
        self.write(name, data, false).await.map(|_| ())
    }

    async fn get(&self, name: &str) -> Result<Bytes> {
        let path = self.path(name)?;
        let name = name.to_string();
        Self::blocking(move || {
            fs::read(&path)
                .map(Bytes::from)
                .map_err(|e| Error::io(e, false, &name))
        })
        .await
    }

    async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Bytes> {
        let path = self.path(name)?;
        let name = name.to_string();
        let len = range_len(len)?;
        Self::blocking(move || {
            let f = File::open(&path).map_err(|e| Error::io(e, false, &name))?;
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, offset).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    truncated(&name, offset.saturating_add(len as u64))
                } else {
                    Error::io(e, false, &name)
                }
            })?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let dir_part = list_dir(prefix)?;
        let start = self.root.join(dir_part);
        let prefix = prefix.to_string();
        let dir_part = dir_part.to_string();
        Self::blocking(move || {
            let mut out = Vec::new();
            walk(&start, &dir_part, &mut out).map_err(|e| Error::io(e, false, &prefix))?;
            out.retain(|o| o.name.starts_with(&prefix));
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        let root = self.root.clone();
        let name = name.to_string();
        Self::blocking(move || {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(Error::io(e, true, &name)),
            }
            let dir = path.parent().unwrap_or(&root);
            sync_dir(dir).map_err(|e| Error::io(e, true, &name))
        })
        .await
    }

    async fn stat(&self, name: &str) -> Result<Option<ObjectInfo>> {
        let path = self.path(name)?;
        let name = name.to_string();
        Self::blocking(move || match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(ObjectInfo {
                name,
                size: m.len(),
                modified: unix_secs(&m),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(e, false, &name)),
        })
        .await
    }

    async fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<u64> {
        let root = self.root.clone();
        Self::blocking(move || {
            let cutoff = std::time::SystemTime::now()
                .checked_sub(older_than)
                .unwrap_or(std::time::UNIX_EPOCH);
            let mut removed = 0;
            remove_temporaries(&root, cutoff, &mut removed)
                .map_err(|e| Error::io(e, true, "temporary files"))?;
            Ok(removed)
        })
        .await
    }
}

/// Deletes `.tmp-*` files under `dir` last modified before `cutoff` (a file or
/// directory that vanishes meanwhile is skipped).
fn remove_temporaries(
    dir: &Path,
    cutoff: std::time::SystemTime,
    removed: &mut u64,
) -> std::io::Result<()> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if gone(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    for ent in rd {
        let ent = ent?;
        let ft = match ent.file_type() {
            Ok(ft) => ft,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(e),
        };
        let name = ent.file_name();
        if ft.is_dir() {
            remove_temporaries(&ent.path(), cutoff, removed)?;
        } else if ft.is_file() && name.to_string_lossy().starts_with(".tmp-") {
            let old = match ent.metadata().and_then(|m| m.modified()) {
                Ok(t) => t < cutoff,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(e),
            };
            if old {
                match fs::remove_file(ent.path()) {
                    Ok(()) => *removed += 1,
                    Err(e) if gone(&e) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}
