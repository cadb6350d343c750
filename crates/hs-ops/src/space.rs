//! Whether a restore fits: the bytes each file system receives (the data directory,
//! each tablespace where it will go) against the space free there, before anything is
//! written. `restore --preview` shows it; `restore` and the preview refuse with
//! `preflight.target_space_insufficient` (exit 4) when it does not fit.

use std::path::{Path, PathBuf};

use hs_base::code;
use hs_pitr::TablespaceMapping;
use hs_repo::{BackupManifest, FileKind};

use crate::{human_bytes, Error, Result};

/// The space one file system needs for a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceNeed {
    /// The restore's directories on this file system (the data directory first).
    pub locations: Vec<PathBuf>,
    /// Bytes of file content the restore writes there.
    pub needed: u64,
    /// Bytes free there for an unprivileged user (`statvfs` `f_bavail`); `None` when
    /// it could not be read.
    pub free: Option<u64>,
}

impl SpaceNeed {
    /// The directories, comma-separated, as messages and the preview name them.
    pub fn locations_text(&self) -> String {
        self.locations
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether the restore does not fit here (unknown free space fits).
    pub fn short(&self) -> bool {
        self.free.is_some_and(|f| self.needed > f)
    }
}

/// Where each archive of `m` is restored, and its bytes of file content: the base
/// archive into `data_dir`, a tablespace into its mapped directory or its original
/// location.
fn archive_targets(
    m: &BackupManifest,
    data_dir: &Path,
    mappings: &[TablespaceMapping],
) -> Vec<(PathBuf, u64)> {
    m.archives
        .iter()
        .map(|a| {
            let bytes = a
                .files
                .iter()
                .filter(|f| matches!(f.kind, FileKind::File))
                .map(|f| f.size)
                .sum();
            let dir = match &a.tablespace_location {
                None => data_dir.to_path_buf(),
                Some(loc) => mappings
                    .iter()
                    .find(|t| t.old_dir == Path::new(loc))
                    .map_or_else(|| PathBuf::from(loc), |t| t.new_dir.clone()),
            };
            (dir, bytes)
        })
        .collect()
}

/// The space `m` needs restored into `data_dir` (tablespaces as `mappings` send them),
/// per file system, the data directory's first.
pub fn restore_space(
    m: &BackupManifest,
    data_dir: &Path,
    mappings: &[TablespaceMapping],
) -> Vec<SpaceNeed> {
    let mut out: Vec<(Option<u64>, SpaceNeed)> = Vec::new();
    for (dir, bytes) in archive_targets(m, data_dir, mappings) {
        let existing = nearest_existing(&dir);
        let device = existing.as_deref().and_then(device_of);
        match out.iter_mut().find(|(d, _)| d.is_some() && *d == device) {
            Some((_, need)) => {
                need.needed += bytes;
                need.locations.push(dir);
            }
            None => out.push((
                device,
                SpaceNeed {
                    locations: vec![dir],
                    needed: bytes,
                    free: existing.as_deref().and_then(free_bytes),
                },
            )),
        }
    }
    out.into_iter().map(|(_, n)| n).collect()
}

/// `preflight.target_space_insufficient` for the first file system the restore does
/// not fit on, if any.
pub fn check_space(needs: &[SpaceNeed]) -> Result<()> {
    let Some(n) = needs.iter().find(|n| n.short()) else {
        return Ok(());
    };
    let at = n.locations_text();
    Err(Error::new(
        code::PREFLIGHT_TARGET_SPACE_INSUFFICIENT,
        format!(
            "the restore needs {} at {at}, but its file system has {} free",
            human_bytes(n.needed),
            human_bytes(n.free.unwrap_or(0)),
        ),
    )
    .with_suggestion(
        "free space there, or restore elsewhere (--target, --tablespace-mapping OLDDIR=NEWDIR)",
    ))
}

/// `p` or its nearest ancestor that exists.
fn nearest_existing(p: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(p).ok()?;
    abs.ancestors().find(|a| a.exists()).map(Path::to_path_buf)
}

fn device_of(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| m.dev())
}

/// Bytes available to an unprivileged user on the file system holding `p`.
#[allow(unsafe_code)]
fn free_bytes(p: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a NUL-terminated path and `st` points to writable memory the size
    // of a `statvfs`; the struct is read only when the call reports success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_only_when_free_space_is_known_and_smaller() {
        let need = |needed, free| SpaceNeed {
            locations: vec![PathBuf::from("/x")],
            needed,
            free,
        };
        assert!(need(10, Some(9)).short());
        assert!(!need(10, Some(10)).short());
        assert!(!need(10, None).short());
        let e = check_space(&[need(1, Some(5)), need(3 << 30, Some(1 << 30))]).unwrap_err();
        assert_eq!(e.code(), "preflight.target_space_insufficient");
        assert!(e.to_string().contains("needs 3.0 GiB at /x"), "{e}");
        assert!(e.to_string().contains("1.0 GiB free"), "{e}");
        check_space(&[need(1, Some(5))]).unwrap();
    }

    #[test]
    fn free_space_of_an_absent_directory_is_its_parents() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("a/b/c");
        assert_eq!(nearest_existing(&absent).as_deref(), Some(dir.path()));
        assert!(free_bytes(dir.path()).is_some_and(|f| f > 0));
    }
}
