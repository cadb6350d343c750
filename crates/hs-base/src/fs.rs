//! Publishing a file atomically: write a temporary file in the destination's directory,
//! fsync it, move it under its final name with `rename(2)` (replace) or `link(2)`
//! (create-if-absent), fsync the directory. A reader sees the old file or the whole new
//! one, never part of it; after a crash the new file is either complete or absent.
//!
//! Every crate that publishes a file (the `file://` store, the WAL fetched for
//! PostgreSQL, the recovery settings of a restore, the config file) goes through
//! [`AtomicFile`]. The keyring is the exception: it is created in place (`O_EXCL`, fsync,
//! [`sync_dir`]) and replaced by renaming a staged keyring that is used before it is
//! published (hs-crypt's `Keyring::replace`). Errors are plain [`std::io::Error`]s: each
//! caller maps them to its own coded error.
//!
//! ```
//! # fn demo(dir: &std::path::Path) -> std::io::Result<()> {
//! use hs_base::fs::{temp_path, AtomicFile};
//! let dest = dir.join("settings.conf");
//! let tmp = temp_path(&dest, ".tmp-", 0x1234);
//! AtomicFile::new(&dest, &tmp).mode(0o600).write(b"a = 1\n")?;
//! # Ok(()) }
//! ```

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The directory holding `path`: its parent, or `.` for a bare file name.
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// fsyncs a directory, making the entries created, renamed or removed in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A temporary name next to `dest`: `<prefix><file name>-<nonce as 16 hex digits>`.
/// Start `prefix` with `.` to keep the file hidden; pass a random `nonce` when several
/// writers may publish the same name at once.
pub fn temp_path(dest: &Path, prefix: &str, nonce: u64) -> PathBuf {
    let base = dest
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!("{prefix}{base}-{nonce:016x}"))
}

/// One atomic publication of a file at `dest` through the temporary file `temp` (in the
/// same directory; see [`temp_path`]).
///
/// [`write_with`](AtomicFile::write_with): creates `temp` exclusively (`O_EXCL`: never
/// writes through a file or symlink already there) with the [`mode`](AtomicFile::mode)
/// if one is set (then also `fchmod`ed to exactly that mode, whatever the umask), fills
/// it, fsyncs it, publishes it with `rename(2)` or, after
/// [`if_absent`](AtomicFile::if_absent), `link(2)`, and fsyncs the directory. The
/// temporary file never outlives a failed call (nor a successful `link`); a `temp`
/// that already existed is left alone. [`durable(false)`](AtomicFile::durable) skips
/// both fsyncs, for a caller whose reader makes the file durable itself.
#[derive(Clone, Copy, Debug)]
#[must_use = "nothing is written until write or write_with is called"]
pub struct AtomicFile<'a> {
    dest: &'a Path,
    temp: &'a Path,
    mode: Option<u32>,
    durable: bool,
    if_absent: bool,
}

impl<'a> AtomicFile<'a> {
    /// Publishes `dest` through `temp`: replace, durable, default mode (`0666` less the
    /// umask).
    pub fn new(dest: &'a Path, temp: &'a Path) -> AtomicFile<'a> {
        AtomicFile {
            dest,
            temp,
            mode: None,
            durable: true,
            if_absent: false,
        }
    }

    /// The permission bits of the new file, exactly (the umask does not apply).
    pub fn mode(mut self, mode: u32) -> AtomicFile<'a> {
        self.mode = Some(mode);
        self
    }

    /// Whether to fsync the file before and the directory after publishing (default
    /// `true`).
    pub fn durable(mut self, durable: bool) -> AtomicFile<'a> {
        self.durable = durable;
        self
    }

    /// Publish with `link(2)`: an existing `dest` is kept and the write reports `false`.
    pub fn if_absent(mut self) -> AtomicFile<'a> {
        self.if_absent = true;
        self
    }

    /// Publishes `data`; see [`write_with`](AtomicFile::write_with).
    pub fn write(self, data: &[u8]) -> io::Result<bool> {
        self.write_with(|f| io::Write::write_all(f, data))
    }

    /// Publishes what `fill` writes into the temporary file. Returns whether `dest` was
    /// written: always `true` when replacing, `false` after
    /// [`if_absent`](AtomicFile::if_absent) when `dest` already existed (nothing
    /// changed; the directory is still fsynced, as after a write).
    pub fn write_with(self, fill: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<bool> {
        let mut open = OpenOptions::new();
        open.write(true).create_new(true);
        if let Some(mode) = self.mode {
            open.mode(mode);
        }
        let mut f = open.open(self.temp)?;
        let res = (|| {
            fill(&mut f)?;
            if let Some(mode) = self.mode {
                f.set_permissions(Permissions::from_mode(mode))?;
            }
            if self.durable {
                f.sync_all()?;
            }
            drop(f);
            if self.if_absent {
                match std::fs::hard_link(self.temp, self.dest) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(e),
                }
            } else {
                std::fs::rename(self.temp, self.dest).map(|()| true)
            }
        })();
        if res.is_err() || self.if_absent {
            let _ = std::fs::remove_file(self.temp);
        }
        let written = res?;
        if self.durable {
            sync_dir(parent_dir(self.dest))?;
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh empty directory under the system temp dir, removed on drop.
    struct Dir(PathBuf);
    impl Dir {
        fn new() -> Dir {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "hs-base-fs-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        /// A fresh directory, the path of `name` in it and a temporary name for it.
        fn with_target(name: &str) -> (Dir, PathBuf, PathBuf) {
            let d = Dir::new();
            let dest = d.0.join(name);
            let tmp = temp_path(&dest, ".tmp-", 7);
            (d, dest, tmp)
        }
        fn names(&self) -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn names() {
        assert_eq!(
            temp_path(Path::new("/a/b/c.conf"), ".tmp-", 0xab),
            Path::new("/a/b/.tmp-c.conf-00000000000000ab")
        );
        assert_eq!(parent_dir(Path::new("x")), Path::new("."));
        assert_eq!(parent_dir(Path::new("/a/x")), Path::new("/a"));
    }

    #[test]
    fn replaces_with_content_and_exact_mode() {
        let (d, dest, tmp) = Dir::with_target("f");
        std::fs::write(&dest, b"old").unwrap();
        assert!(AtomicFile::new(&dest, &tmp)
            .mode(0o640)
            .write(b"new")
            .unwrap());
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&dest).unwrap().mode() & 0o777, 0o640);
        assert_eq!(d.names(), ["f"]);
        // Not durable, default mode, content from a closure.
        AtomicFile::new(&dest, &tmp)
            .durable(false)
            .write_with(|f| {
                io::Write::write_all(f, b"a")?;
                io::Write::write_all(f, b"b")
            })
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"ab");
        assert_eq!(d.names(), ["f"]);
    }

    #[test]
    fn if_absent_keeps_an_existing_file() {
        let (d, dest, tmp) = Dir::with_target("obj");
        let create = |data: &[u8]| AtomicFile::new(&dest, &tmp).if_absent().write(data);
        assert!(create(b"one").unwrap());
        assert!(!create(b"two").unwrap());
        assert_eq!(std::fs::read(&dest).unwrap(), b"one");
        assert_eq!(d.names(), ["obj"]);
    }

    #[test]
    fn no_temporary_left_behind_on_failure() {
        // The write into the temporary file fails.
        let (d, dest, tmp) = Dir::with_target("f");
        let e = AtomicFile::new(&dest, &tmp)
            .mode(0o600)
            .write_with(|_| Err(io::Error::other("full")))
            .unwrap_err();
        assert_eq!(e.to_string(), "full");
        assert!(d.names().is_empty(), "{:?}", d.names());
        // The rename fails: the destination is a non-empty directory.
        let busy = d.0.join("busy");
        std::fs::create_dir_all(busy.join("x")).unwrap();
        let tmp = temp_path(&busy, ".tmp-", 4);
        AtomicFile::new(&busy, &tmp).write(b"data").unwrap_err();
        assert_eq!(d.names(), ["busy"]);
        // A temporary name that exists is an error and the file there is kept.
        let tmp = d.0.join(".taken");
        std::fs::write(&tmp, b"someone else's").unwrap();
        let e = AtomicFile::new(&dest, &tmp).write(b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&tmp).unwrap(), b"someone else's");
        assert!(!dest.exists());
    }
}
