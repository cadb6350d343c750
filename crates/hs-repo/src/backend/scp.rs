//! `scp://`: the repository on a host reached by ssh exec, driven by POSIX shell commands.
//!
//! Every operation is one `sh -c '<script>'` over the shared control master. Paths are
//! single-quoted (object names are already restricted to `[A-Za-z0-9._-]` segments; the
//! root may hold anything but control characters). Writes follow the `file://` recipe:
//! `cat` into a hidden temp file in the target directory, check its size, `sync FILE`
//! (coreutils and busybox fsync the named files), then `ln` (create-if-absent: fails if
//! the name exists) or `mv -f` (replace), then `sync DIR`. New directories are synced
//! into their parents. Listing uses `find` and `stat -c` (GNU coreutils or busybox).
//!
//! Exit codes of the scripts: 0 ok, 40 the object does not exist, 42 short upload;
//! anything else is a failure described by the script's stderr.

use std::process::Output;

use async_trait::async_trait;
use bytes::Bytes;
use hs_base::code;
use openssh::{Session, Stdio};
use tokio::io::AsyncWriteExt;

use super::ssh::{
    disconnected, op_timeout, parent_of, sq, temp_path, timed_out, Slot, Target, IDLE_RECONNECT,
};
use crate::backend::{check_name, list_dir, range_len, truncated, Backend, ObjectInfo};
use crate::error::{Error, Result};

/// Remote commands in flight at once per backend: each is one session on the master
/// connection, and sshd's default `MaxSessions` is 10.
const MAX_SESSIONS: usize = 8;
const EXIT_NOT_FOUND: i32 = 40;
const EXIT_SHORT: i32 = 42;

pub(crate) struct ScpBackend {
    t: Target,
    slot: Slot<Session>,
    sessions: tokio::sync::Semaphore,
}

impl ScpBackend {
    pub(crate) fn new(t: Target) -> ScpBackend {
        ScpBackend {
            t,
            slot: Slot::new(),
            sessions: tokio::sync::Semaphore::new(MAX_SESSIONS),
        }
    }

    /// Runs `script` with `sh -c` on the remote, feeding `input` to its stdin.
    async fn run(&self, what: &str, script: &str, input: Option<Bytes>) -> Result<Output> {
        let t = &self.t;
        let _permit = self.sessions.acquire().await.map_err(|_| {
            Error::new(
                code::ABORTED_TASK_FAILED,
                "the scp:// backend was shut down",
            )
        })?;
        let session = self.slot.get(Some(IDLE_RECONNECT), || t.connect()).await?;
        let bytes = input.as_ref().map(|b| b.len() as u64).unwrap_or(0);
        let limit = op_timeout(bytes);
        let res = tokio::time::timeout(limit, run_on(&session, script, input)).await;
        let res = match res {
            Err(_) => {
                self.slot.invalidate(&session).await;
                return Err(timed_out(&t.location, what, limit));
            }
            Ok(r) => r,
        };
        match res {
            Ok(out) => {
                self.slot.touch(&session).await;
                Ok(out)
            }
            Err(e) => {
                self.slot.invalidate(&session).await;
                Err(match e {
                    openssh::Error::Remote(io) if io.kind() == std::io::ErrorKind::NotFound => {
                        Error::new(
                            code::PREFLIGHT_SSH_REMOTE_TOOLS,
                            format!(
                                "a program the scp:// backend needs is missing on {}: {io}",
                                t.location
                            ),
                        )
                        .with_suggestion(
                            "the remote host needs a POSIX sh with cat, ln, mv, rm, sync, find, \
                             stat, tail, head and wc (GNU coreutils or busybox)",
                        )
                    }
                    other => disconnected(&t.location, what, other),
                })
            }
        }
    }

    /// Maps a failed script's exit status and stderr to an error.
    fn failure(&self, name: &str, write: bool, out: &Output) -> Error {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut msg = stderr.trim().to_string();
        msg.truncate(400);
        let code = out.status.code();
        if code == Some(EXIT_NOT_FOUND) {
            return Error::new(
                code::NOTFOUND_OBJECT,
                format!("object {name} does not exist"),
            );
        }
        if code == Some(EXIT_SHORT) {
            return disconnected(
                &self.t.location,
                "an upload",
                "the upload arrived incomplete",
            );
        }
        if msg.contains("No space left") || msg.contains("Disk quota exceeded") {
            return Error::new(
                code::IO_NO_SPACE,
                format!("no space left on {} while writing {name}", self.t.location),
            )
            .temporary(true)
            .with_suggestion("free space on the remote filesystem and retry");
        }
        if msg.contains("Permission denied") || msg.contains("Read-only file system") {
            return Error::new(
                code::IO_PERMISSION_DENIED,
                format!("permission denied on {} for {name}: {msg}", self.t.location),
            )
            .with_suggestion("check the owner and mode of the remote repository directory");
        }
        if msg.contains("not found") || code == Some(127) {
            return Error::new(
                code::PREFLIGHT_SSH_REMOTE_TOOLS,
                format!(
                    "a program the scp:// backend needs is missing on {}: {msg}",
                    self.t.location
                ),
            )
            .with_suggestion(
                "the remote host needs a POSIX sh with cat, ln, mv, rm, sync, find, stat, tail, \
                 head and wc (GNU coreutils or busybox)",
            );
        }
        let (code, verb) = if write {
            (code::IO_WRITE_FAILED, "writing")
        } else {
            (code::IO_READ_FAILED, "reading")
        };
        Error::new(
            code,
            format!(
                "{verb} {name} on {} failed ({}): {msg}",
                self.t.location, out.status
            ),
        )
    }

    /// Shell lines that create the object's directory (and sync new entries) if missing.
    fn mkdir_lines(&self, dir: &str) -> String {
        // Every directory from the root's parent down to `dir`, so that each new entry
        // is synced into its parent.
        let mut chain = vec![dir.to_string()];
        let mut d = dir.to_string();
        while d.len() > self.t.root.len() && d != "/" {
            d = parent_of(&d);
            chain.push(d.clone());
        }
        let root_parent = parent_of(&self.t.root);
        chain.reverse();
        let list: Vec<String> = chain.iter().map(|p| sq(p)).collect();
        format!(
            "if [ ! -d {d} ]; then mkdir -p {d}; sync {rp} 2>/dev/null || :; sync {list}; fi\n",
            d = sq(dir),
            rp = sq(&root_parent),
            list = list.join(" ")
        )
    }

    fn write_script(&self, name: &str, len: usize, replace: bool) -> String {
        let f = self.t.path_of(name);
        let dir = parent_of(&f);
        let tmp = temp_path(&dir, name);
        let publish = if replace {
            "mv -f \"$T\" \"$F\"\nsync \"$D\"\necho done\n".to_string()
        } else {
            "if E=$(ln \"$T\" \"$F\" 2>&1); then\n  sync \"$D\"\n  echo created\n\
             elif [ -e \"$F\" ]; then\n  echo exists\nelse\n  echo \"$E\" >&2\n  exit 1\nfi\n"
                .to_string()
        };
        format!(
            "set -e\nF={f}\nD={d}\nT={t}\ntrap 'rm -f \"$T\"' EXIT\ntrap 'exit 1' HUP INT TERM PIPE\n\
             {mk}cat > \"$T\"\nN=$(wc -c < \"$T\")\n\
             if [ \"$N\" -ne {len} ]; then echo \"short upload: $N of {len} bytes\" >&2; exit {short}; fi\n\
             sync \"$T\"\n{publish}",
            f = sq(&f),
            d = sq(&dir),
            t = sq(&tmp),
            mk = self.mkdir_lines(&dir),
            short = EXIT_SHORT,
        )
    }
}

async fn run_on(
    session: &Session,
    script: &str,
    input: Option<Bytes>,
) -> std::result::Result<Output, openssh::Error> {
    let mut cmd = session.raw_command(format!("sh -c {}", sq(script)));
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().await?;
    let stdin = child.stdin().take();
    let feed = async move {
        if let (Some(mut w), Some(data)) = (stdin, input) {
            // A write error (the remote side gave up) shows in the exit status and stderr.
            let _ = w.write_all(&data).await;
            let _ = w.shutdown().await;
        }
    };
    let (_, out) = tokio::join!(feed, child.wait_with_output());
    out
}

fn parse_stat_line(line: &str) -> Option<(u64, Option<i64>, &str)> {
    let mut it = line.splitn(3, ' ');
    let size = it.next()?.parse().ok()?;
    let mtime = it.next()?.parse().ok();
    Some((size, mtime, it.next().unwrap_or("")))
}

#[async_trait]
impl Backend for ScpBackend {
    fn location(&self) -> &str {
        &self.t.location
    }

    fn read_window(&self) -> u32 {
        super::REMOTE_READ_WINDOW
    }

    async fn put_if_absent(&self, name: &str, data: Bytes) -> Result<bool> {
        check_name(name)?;
        let script = self.write_script(name, data.len(), false);
        let out = self.run("an upload", &script, Some(data)).await?;
        if !out.status.success() {
            return Err(self.failure(name, true, &out));
        }
        match String::from_utf8_lossy(&out.stdout).trim() {
            "created" => Ok(true),
            "exists" => Ok(false),
            other => Err(Error::new(
                code::IO_WRITE_FAILED,
                format!(
                    "unexpected answer {other:?} while writing {name} on {}",
                    self.t.location
                ),
            )),
        }
    }

    async fn put(&self, name: &str, data: Bytes) -> Result<()> {
        check_name(name)?;
        let script = self.write_script(name, data.len(), true);
        let out = self.run("an upload", &script, Some(data)).await?;
        if !out.status.success() || String::from_utf8_lossy(&out.stdout).trim() != "done" {
            return Err(self.failure(name, true, &out));
        }
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Bytes> {
        check_name(name)?;
        let f = sq(&self.t.path_of(name));
        let script = format!("[ -f {f} ] || exit {EXIT_NOT_FOUND}\nexec cat {f}\n");
        let out = self.run("a download", &script, None).await?;
        if !out.status.success() {
            return Err(self.failure(name, false, &out));
        }
        Ok(Bytes::from(out.stdout))
    }

    async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Bytes> {
        check_name(name)?;
        let want = range_len(len)?;
        let f = sq(&self.t.path_of(name));
        let script = format!(
            "[ -f {f} ] || exit {EXIT_NOT_FOUND}\ntail -c +{start} {f} | head -c {len}\n",
            start = offset.saturating_add(1)
        );
        let out = self.run("a ranged download", &script, None).await?;
        if !out.status.success() {
            return Err(self.failure(name, false, &out));
        }
        if out.stdout.len() < want {
            return Err(truncated(name, offset.saturating_add(len)));
        }
        let mut v = out.stdout;
        v.truncate(want);
        Ok(Bytes::from(v))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let dir_part = list_dir(prefix)?;
        let start = if dir_part.is_empty() {
            self.t.root.clone()
        } else {
            self.t.path_of(dir_part)
        };
        let script = format!(
            "export LC_ALL=C\ncd {} 2>/dev/null || exit 0\nfind . -name '.?*' -prune -o -type f -exec stat -c '%s %Y %n' {{}} +\n",
            sq(&start)
        );
        let out = self.run("a listing", &script, None).await?;
        // An object deleted between find and stat (a released lease) makes both
        // complain and exit 1: it is simply not listed. Any other complaint fails.
        let only_vanished = || {
            let err = String::from_utf8_lossy(&out.stderr);
            let mut lines = err.lines().filter(|l| !l.trim().is_empty()).peekable();
            lines.peek().is_some() && lines.all(|l| l.ends_with("No such file or directory"))
        };
        if !out.status.success() && (out.status.code() != Some(1) || !only_vanished()) {
            return Err(self.failure(prefix, false, &out));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut v = Vec::new();
        for line in text.lines() {
            let Some((size, modified, path)) = parse_stat_line(line) else {
                continue;
            };
            let rel = path.strip_prefix("./").unwrap_or(path);
            let name = if dir_part.is_empty() {
                rel.to_string()
            } else {
                format!("{dir_part}/{rel}")
            };
            if check_name(&name).is_err() || !name.starts_with(prefix) {
                continue;
            }
            v.push(ObjectInfo {
                name,
                size,
                modified,
            });
        }
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    async fn delete(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let f = self.t.path_of(name);
        let script = format!(
            "set -e\nif [ -e {f} ]; then rm -f {f}; sync {d}; fi\n",
            f = sq(&f),
            d = sq(&parent_of(&f))
        );
        let out = self.run("a delete", &script, None).await?;
        if !out.status.success() {
            return Err(self.failure(name, true, &out));
        }
        Ok(())
    }

    async fn stat(&self, name: &str) -> Result<Option<ObjectInfo>> {
        check_name(name)?;
        let f = sq(&self.t.path_of(name));
        let script = format!("if [ -f {f} ]; then stat -c '%s %Y' {f}; else echo none; fi\n");
        let out = self.run("a stat", &script, None).await?;
        if !out.status.success() {
            return Err(self.failure(name, false, &out));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.trim();
        if line == "none" {
            return Ok(None);
        }
        let (size, modified, _) = parse_stat_line(line).ok_or_else(|| {
            Error::new(
                code::IO_READ_FAILED,
                format!(
                    "unexpected stat output {line:?} for {name} on {}",
                    self.t.location
                ),
            )
        })?;
        Ok(Some(ObjectInfo {
            name: name.to_string(),
            size,
            modified,
        }))
    }

    async fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<u64> {
        // find's -mmin +N means "more than N whole minutes ago".
        let minutes = older_than.as_secs().div_ceil(60);
        let script = format!(
            "export LC_ALL=C\ncd {} 2>/dev/null || exit 0\nfind . -type f -name '.tmp-*' -mmin +{minutes} -print -delete\n",
            sq(&self.t.root)
        );
        let out = self.run("removing temporary files", &script, None).await?;
        if !out.status.success() {
            return Err(self.failure("temporary files", true, &out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).lines().count() as u64)
    }
}

impl std::fmt::Debug for ScpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScpBackend")
            .field("location", &self.t.location)
            .finish()
    }
}
