//! `sftp://`: the repository on an SFTP server, over the shared ssh control master.
//!
//! Writes go to a hidden temp file in the target directory (`create_new`), are fsynced
//! (`fsync@openssh.com`), then published with `hardlink@openssh.com` for create-if-absent
//! (`link(2)` fails when the name exists, so a partial object is never visible under its
//! final name) or `posix-rename@openssh.com` for replace. Directories are fsynced by
//! opening them read-only and fsyncing the handle (OpenSSH's sftp-server allows this);
//! where the server refuses, that step is skipped. Listing walks directories in parallel
//! (the 256 `data/xx/` shards are read concurrently).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use hs_base::code;
use openssh_sftp_client::error::SftpErrorKind;
use openssh_sftp_client::{Error as SftpError, Sftp, SftpOptions};
use tokio::io::AsyncSeekExt;

use super::ssh::{disconnected, op_timeout, parent_of, temp_path, timed_out, Slot, Target};
use crate::backend::{check_name, list_dir, range_len, truncated, Backend, ObjectInfo};
use crate::error::{Error, Result};

/// Directories read at the same time while listing.
const LIST_CONCURRENCY: usize = 16;

pub(crate) struct SftpBackend {
    t: Arc<Target>,
    slot: Slot<Sftp>,
}

/// What a failed SFTP call means for us.
enum Failure {
    /// A protocol-level failure (including a missing object); the connection is fine.
    Server(Error),
    /// The connection (or the client's background task) is gone.
    Connection(Error),
}

impl SftpBackend {
    pub(crate) fn new(t: Target) -> SftpBackend {
        SftpBackend {
            t: Arc::new(t),
            slot: Slot::new(),
        }
    }

    async fn sftp(&self) -> Result<Arc<Sftp>> {
        let t = self.t.clone();
        self.slot
            .get(None, || async move {
                let session = t.connect().await?;
                Sftp::from_session(session, SftpOptions::new())
                    .await
                    .map_err(|e| {
                        Error::new(
                            code::PREFLIGHT_SSH_NO_SFTP,
                            format!("{} does not offer the SFTP subsystem: {e}", t.location),
                        )
                        .with_suggestion(
                            "enable `Subsystem sftp internal-sftp` in sshd_config, or use an \
                             scp:// URL (plain ssh exec) for this host",
                        )
                    })
            })
            .await
    }

    /// Runs `op` against the SFTP session with a time limit; a lost connection makes the
    /// next operation reconnect.
    async fn with<T, F, Fut>(&self, what: &str, bytes: u64, op: F) -> Result<T>
    where
        F: FnOnce(Arc<Sftp>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Failure>>,
    {
        let sftp = self.sftp().await?;
        let limit = op_timeout(bytes);
        match tokio::time::timeout(limit, op(sftp.clone())).await {
            Err(_) => {
                self.slot.invalidate(&sftp).await;
                Err(timed_out(&self.t.location, what, limit))
            }
            Ok(Ok(v)) => Ok(v),
            Ok(Err(Failure::Connection(e))) => {
                self.slot.invalidate(&sftp).await;
                Err(e)
            }
            Ok(Err(Failure::Server(e))) => Err(e),
        }
    }
}

/// How a write publishes its temp file under the final name.
#[derive(Clone, Copy)]
enum Publish {
    /// `hardlink@openssh.com`: fails when the name exists, nothing is replaced.
    IfAbsent,
    /// `posix-rename@openssh.com`: atomically replaces an existing object.
    Replace,
}

impl SftpBackend {
    /// Both writes: check the server has the extension that publishes, create the
    /// directory, write and fsync a temp file there, publish it, fsync the directory.
    /// Returns whether the object was created (always `true` for [`Publish::Replace`]).
    async fn write(&self, name: &str, data: Bytes, how: Publish) -> Result<bool> {
        check_name(name)?;
        let t = self.t.clone();
        let name = name.to_string();
        self.with("an upload", data.len() as u64, |sftp| async move {
            let loc = &t.location;
            let f = t.path_of(&name);
            let dir = parent_of(&f);
            let cls = |e| classify(loc, &name, true, e);
            let (supported, ext) = match how {
                Publish::IfAbsent => (sftp.support_hardlink(), &"hardlink@openssh.com"),
                Publish::Replace => (sftp.support_posix_rename(), &"posix-rename@openssh.com"),
            };
            if !supported {
                return Err(cls(SftpError::UnsupportedExtension(ext)));
            }
            ensure_dir(&sftp, &t.root, &dir).await.map_err(cls)?;
            let tmp = write_temp(&sftp, &dir, &name, &data).await.map_err(cls)?;
            let mut fs = sftp.fs();
            match how {
                Publish::IfAbsent => {
                    let linked = fs.hard_link(&tmp, &f).await;
                    let _ = fs.remove_file(&tmp).await;
                    match linked {
                        Ok(()) => {
                            sync_dir(&sftp, &dir).await;
                            Ok(true)
                        }
                        Err(e) => match fs.metadata(&f).await {
                            // link(2) failed because the name exists (SFTP reports EEXIST
                            // as a generic failure, so look).
                            Ok(_) => Ok(false),
                            Err(_) => Err(cls(e)),
                        },
                    }
                }
                Publish::Replace => {
                    if let Err(e) = fs.rename(&tmp, &f).await {
                        let _ = fs.remove_file(&tmp).await;
                        return Err(cls(e));
                    }
                    sync_dir(&sftp, &dir).await;
                    Ok(true)
                }
            }
        })
        .await
    }
}

/// Classifies an SFTP error on `name`.
fn classify(location: &str, name: &str, write: bool, e: SftpError) -> Failure {
    match &e {
        SftpError::SftpError(kind, msg) => {
            let text = msg.to_string();
            match kind {
                SftpErrorKind::NoSuchFile => Failure::Server(Error::new(
                    code::NOTFOUND_OBJECT,
                    format!("object {name} does not exist"),
                )),
                SftpErrorKind::PermDenied => Failure::Server(
                    Error::new(
                        code::IO_PERMISSION_DENIED,
                        format!("permission denied on {location} for {name}"),
                    )
                    .with_suggestion("check the owner and mode of the remote repository directory"),
                ),
                _ if text.contains("No space") || text.contains("quota") => Failure::Server(
                    Error::new(
                        code::IO_NO_SPACE,
                        format!("no space left on {location} while writing {name}"),
                    )
                    .temporary(true)
                    .with_suggestion("free space on the remote filesystem and retry"),
                ),
                _ => {
                    let (code, verb) = if write {
                        (code::IO_WRITE_FAILED, "writing")
                    } else {
                        (code::IO_READ_FAILED, "reading")
                    };
                    Failure::Server(Error::new(
                        code,
                        format!("{verb} {name} on {location} failed: {kind:?} {text}"),
                    ))
                }
            }
        }
        SftpError::UnsupportedExtension(ext) => Failure::Server(
            Error::new(
                code::PREFLIGHT_SSH_SFTP_EXTENSION,
                format!("the SFTP server at {location} lacks the {ext} extension"),
            )
            .with_suggestion("use OpenSSH's sftp-server, or an scp:// URL for this host"),
        ),
        _ => Failure::Connection(disconnected(location, name, e)),
    }
}

fn is_missing(e: &SftpError) -> bool {
    matches!(e, SftpError::SftpError(SftpErrorKind::NoSuchFile, _))
}

/// Creates `dir` and its missing ancestors below (and including) `root`, fsyncing each
/// new directory's parent.
async fn ensure_dir(sftp: &Sftp, root: &str, dir: &str) -> std::result::Result<(), SftpError> {
    let mut fs = sftp.fs();
    if fs.metadata(dir).await.is_ok() {
        return Ok(());
    }
    let mut missing = vec![dir.to_string()];
    let mut d = dir.to_string();
    while d.len() > root.len() && d != "/" {
        d = parent_of(&d);
        match fs.metadata(&d).await {
            Ok(_) => break,
            Err(e) if is_missing(&e) => missing.push(d.clone()),
            Err(e) => return Err(e),
        }
    }
    for m in missing.iter().rev() {
        if let Err(e) = fs.create_dir(m).await {
            // Someone else may have created it meanwhile.
            if fs.metadata(m).await.is_err() {
                return Err(e);
            }
        }
        sync_dir(sftp, &parent_of(m)).await;
    }
    Ok(())
}

/// Best-effort fsync of a directory: open it read-only and fsync the handle.
async fn sync_dir(sftp: &Sftp, dir: &str) {
    if !sftp.support_fsync() {
        return;
    }
    if let Ok(mut f) = sftp.options().read(true).open(dir).await {
        let _ = f.sync_all().await;
        let _ = f.close().await;
    }
}

/// Writes `data` to a new temp file in `dir`, fsyncs and closes it; returns its path.
async fn write_temp(
    sftp: &Sftp,
    dir: &str,
    name: &str,
    data: &[u8],
) -> std::result::Result<String, SftpError> {
    let tmp = temp_path(dir, name);
    let mut f = sftp
        .options()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .await?;
    let res = async {
        f.write_all(data).await?;
        if sftp.support_fsync() {
            f.sync_all().await?;
        }
        f.close().await
    }
    .await;
    if let Err(e) = res {
        let _ = sftp.fs().remove_file(&tmp).await;
        return Err(e);
    }
    Ok(tmp)
}

fn modified(m: &openssh_sftp_client::metadata::MetaData) -> Option<i64> {
    m.modified()
        .and_then(|t| i64::try_from(t.as_duration().as_secs()).ok())
}

/// Reads one directory: (files with size and mtime, subdirectories), skipping hidden names.
async fn read_dir(
    sftp: Arc<Sftp>,
    path: PathBuf,
    rel: String,
) -> std::result::Result<(Vec<ObjectInfo>, Vec<(PathBuf, String)>), SftpError> {
    let mut fs = sftp.fs();
    let dir = match fs.open_dir(&path).await {
        Ok(d) => d,
        Err(e) if is_missing(&e) => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(e),
    };
    let mut stream = std::pin::pin!(dir.read_dir());
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    while let Some(ent) =
        std::future::poll_fn(|cx| futures_core::Stream::poll_next(stream.as_mut(), cx)).await
    {
        let ent = ent?;
        let Some(fname) = ent.filename().to_str() else {
            continue;
        };
        if fname.starts_with('.') {
            continue; // ".", "..", temp files and anything hidden
        }
        let child = if rel.is_empty() {
            fname.to_string()
        } else {
            format!("{rel}/{fname}")
        };
        let meta = ent.metadata();
        match ent.file_type() {
            Some(ft) if ft.is_dir() => dirs.push((path.join(fname), child)),
            Some(ft) if ft.is_file() => files.push(ObjectInfo {
                name: child,
                size: meta.len().unwrap_or(0),
                modified: modified(&meta),
            }),
            _ => {}
        }
    }
    Ok((files, dirs))
}

#[async_trait]
impl Backend for SftpBackend {
    fn location(&self) -> &str {
        &self.t.location
    }

    fn read_window(&self) -> u32 {
        super::REMOTE_READ_WINDOW
    }

    async fn put_if_absent(&self, name: &str, data: Bytes) -> Result<bool> {
        self.write(name, data, Publish::IfAbsent).await
    }

    async fn put(&self, name: &str, data: Bytes) -> Result<()> {
        self.write(name, data, Publish::Replace).await.map(|_| ())
    }

    async fn get(&self, name: &str) -> Result<Bytes> {
        check_name(name)?;
        let t = self.t.clone();
        let name = name.to_string();
        self.with(&format!("reading {name}"), 16 << 20, |sftp| async move {
            let f = t.path_of(&name);
            let data = sftp
                .fs()
                .read(&f)
                .await
                .map_err(|e| classify(&t.location, &name, false, e))?;
            Ok(data.freeze())
        })
        .await
    }

    async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Bytes> {
        check_name(name)?;
        let want = range_len(len)?;
        let t = self.t.clone();
        let name = name.to_string();
        self.with(&format!("reading {name}"), len, |sftp| async move {
            let cls = |e| classify(&t.location, &name, false, e);
            let mut file = sftp.open(t.path_of(&name)).await.map_err(cls)?;
            file.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(|e| cls(SftpError::IOError(e)))?;
            let mut buf = bytes::BytesMut::with_capacity(want);
            while buf.len() < want {
                let n = u32::try_from(want - buf.len()).unwrap_or(u32::MAX);
                let cnt = buf.len();
                match file.read(n, buf.split_off(cnt)).await.map_err(cls)? {
                    Some(b) => buf.unsplit(b),
                    None => break,
                }
            }
            let _ = file.close().await;
            if buf.len() < want {
                return Err(Failure::Server(truncated(
                    &name,
                    offset.saturating_add(len),
                )));
            }
            Ok(buf.freeze())
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let dir_part = list_dir(prefix)?;
        let start = if dir_part.is_empty() {
            PathBuf::from(&self.t.root)
        } else {
            PathBuf::from(self.t.path_of(dir_part))
        };
        let t = self.t.clone();
        let prefix = prefix.to_string();
        let dir_part = dir_part.to_string();
        self.with("a listing", 0, |sftp| async move {
            let mut out = Vec::new();
            let mut queue: Vec<(PathBuf, String)> = vec![(start, dir_part)];
            let mut tasks = tokio::task::JoinSet::new();
            loop {
                while tasks.len() < LIST_CONCURRENCY {
                    let Some((path, rel)) = queue.pop() else {
                        break;
                    };
                    tasks.spawn(read_dir(sftp.clone(), path, rel));
                }
                let Some(joined) = tasks.join_next().await else {
                    break;
                };
                let (files, dirs) = joined
                    .map_err(|e| {
                        Failure::Server(
                            Error::new(code::ABORTED_TASK_FAILED, "a listing task failed")
                                .with_source(e),
                        )
                    })?
                    .map_err(|e| classify(&t.location, &prefix, false, e))?;
                out.extend(files.into_iter().filter(|o| o.name.starts_with(&prefix)));
                queue.extend(dirs.into_iter().filter(|(_, rel)| {
                    // Only descend where names with the prefix can be.
                    rel.starts_with(&prefix) || prefix.starts_with(&format!("{rel}/"))
                }));
            }
            out.retain(|o| check_name(&o.name).is_ok());
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    async fn delete(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let t = self.t.clone();
        let name = name.to_string();
        self.with("a delete", 0, |sftp| async move {
            let f = t.path_of(&name);
            match sftp.fs().remove_file(&f).await {
                Ok(()) => {
                    sync_dir(&sftp, &parent_of(&f)).await;
                    Ok(())
                }
                Err(e) if is_missing(&e) => Ok(()),
                Err(e) => Err(classify(&t.location, &name, true, e)),
            }
        })
        .await
    }

    async fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<u64> {
        let t = self.t.clone();
        let cutoff = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.saturating_sub(older_than).as_secs())
            .unwrap_or(0);
        self.with("removing temporary files", 0, |sftp| async move {
            let cls = |e| classify(&t.location, "temporary files", true, e);
            let mut removed = 0;
            let mut todo = vec![PathBuf::from(&t.root)];
            while let Some(dir) = todo.pop() {
                let mut fs = sftp.fs();
                let d = match fs.open_dir(&dir).await {
                    Ok(d) => d,
                    Err(e) if is_missing(&e) => continue,
                    Err(e) => return Err(cls(e)),
                };
                let mut stream = std::pin::pin!(d.read_dir());
                let mut stale = Vec::new();
                while let Some(ent) =
                    std::future::poll_fn(|cx| futures_core::Stream::poll_next(stream.as_mut(), cx))
                        .await
                {
                    let ent = ent.map_err(cls)?;
                    let Some(fname) = ent.filename().to_str() else {
                        continue;
                    };
                    let meta = ent.metadata();
                    match ent.file_type() {
                        Some(ft) if ft.is_dir() && !fname.starts_with('.') => {
                            todo.push(dir.join(fname));
                        }
                        Some(ft)
                            if ft.is_file()
                                && fname.starts_with(".tmp-")
                                && modified(&meta).is_some_and(|m| (m as u64) < cutoff) =>
                        {
                            stale.push(dir.join(fname));
                        }
                        _ => {}
                    }
                }
                for f in stale {
                    match fs.remove_file(&f).await {
                        Ok(()) => removed += 1,
                        Err(e) if is_missing(&e) => {}
                        Err(e) => return Err(cls(e)),
                    }
                }
            }
            Ok(removed)
        })
        .await
    }

    async fn stat(&self, name: &str) -> Result<Option<ObjectInfo>> {
        check_name(name)?;
        let t = self.t.clone();
        let name = name.to_string();
        self.with("a stat", 0, |sftp| async move {
            match sftp.fs().metadata(Path::new(&t.path_of(&name))).await {
                Ok(m) if m.file_type().is_some_and(|ft| ft.is_file()) => Ok(Some(ObjectInfo {
                    size: m.len().unwrap_or(0),
                    modified: modified(&m),
                    name,
                })),
                Ok(_) => Ok(None),
                Err(e) if is_missing(&e) => Ok(None),
                Err(e) => Err(classify(&t.location, &name, false, e)),
            }
        })
        .await
    }
}

impl std::fmt::Debug for SftpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftpBackend")
            .field("location", &self.t.location)
            .finish()
    }
}
