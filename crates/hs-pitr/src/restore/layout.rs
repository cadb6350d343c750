//! Where each archive of a backup is restored (the target, tablespace locations and
//! their mappings), and whether those directories may be used: empty, or with
//! `--delta` a data directory no server runs in, cleared of what the backup does not hold.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hs_base::code;
use hs_repo::{ArchiveEntry, BackupManifest, FileKind};

use super::files::set_mode;
use super::{is_tablespace, RestoreOptions, CONTROL_FILE, PG_MANIFEST_FILE};
use crate::error::{Error, ErrorKind, Result};

/// One `--tablespace-mapping OLDDIR=NEWDIR` (pg_basebackup `-T` semantics): the
/// tablespace that was at `old_dir` on the server is restored into `new_dir`, and its
/// `pg_tblspc` symlink points there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablespaceMapping {
    /// The tablespace's location on the backed-up server.
    pub old_dir: PathBuf,
    /// Where to restore it instead.
    pub new_dir: PathBuf,
}

impl FromStr for TablespaceMapping {
    type Err = Error;
    /// Parses `OLDDIR=NEWDIR`; `\=` stands for a literal `=`; both must be absolute.
    fn from_str(s: &str) -> Result<Self> {
        let mut parts = [String::new(), String::new()];
        let mut i = 0;
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&'=') => {
                    chars.next();
                    parts[i].push('=');
                }
                '=' if i == 0 => i = 1,
                '=' => return Err(mapping_error(s, "it has more than one unescaped '='")),
                c => parts[i].push(c),
            }
        }
        if i == 0 {
            return Err(mapping_error(s, "it has no '='"));
        }
        let [old, new] = parts;
        let old_dir = normalize_abs(&old).ok_or_else(|| {
            mapping_error(s, "the old directory is not an absolute path without '..'")
        })?;
        let new_dir = normalize_abs(&new).ok_or_else(|| {
            mapping_error(s, "the new directory is not an absolute path without '..'")
        })?;
        Ok(TablespaceMapping { old_dir, new_dir })
    }
}

pub(super) fn mapping_error(arg: &str, why: &str) -> Error {
    Error::of_kind(
        ErrorKind::Usage,
        code::USAGE_TABLESPACE_MAPPING_INVALID,
        format!("tablespace mapping {arg:?} is not usable: {why}"),
    )
    .with_suggestion(
        "write --tablespace-mapping OLDDIR=NEWDIR with absolute paths (as pg_basebackup -T)",
    )
}

/// An absolute path without `..`, with `.`, repeated and trailing slashes removed.
pub(super) fn normalize_abs(p: &str) -> Option<PathBuf> {
    let path = Path::new(p);
    if !path.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::RootDir | std::path::Component::CurDir => {}
            std::path::Component::Normal(n) => out.push(n),
            _ => return None,
        }
    }
    Some(out)
}

/// The directory each archive is restored into: the target for the base archive, the
/// mapped or original location for a tablespace.
pub(super) fn archive_roots(
    manifest: &BackupManifest,
    opts: &RestoreOptions,
) -> Result<Vec<PathBuf>> {
    let mut used = vec![false; opts.tablespace_mapping.len()];
    let mut roots = Vec::new();
    for a in &manifest.archives {
        let Some(loc) = a
            .tablespace_location
            .as_deref()
            .filter(|_| is_tablespace(a))
        else {
            roots.push(opts.target.clone());
            continue;
        };
        let loc = normalize_abs(loc).ok_or_else(|| {
            Error::of_kind(
                ErrorKind::Repository,
                code::VERIFY_MANIFEST_PATH_INVALID,
                format!("the backup manifest names an unusable tablespace location {loc:?}"),
            )
            .with_suggestion("the manifest is damaged or forged; run `pg_hardstorage verify`")
        })?;
        let dir = match opts
            .tablespace_mapping
            .iter()
            .position(|m| m.old_dir == loc)
        {
            Some(i) => {
                used[i] = true;
                opts.tablespace_mapping[i].new_dir.clone()
            }
            None => loc,
        };
        roots.push(dir);
    }
    if let Some(i) = used.iter().position(|u| !u) {
        let known: Vec<&str> = manifest
            .archives
            .iter()
            .filter_map(|a| a.tablespace_location.as_deref())
            .collect();
        return Err(Error::of_kind(
            ErrorKind::Usage,
            code::USAGE_TABLESPACE_MAPPING_UNMATCHED,
            format!(
                "--tablespace-mapping names {}, but no tablespace of backup {} was there",
                opts.tablespace_mapping[i].old_dir.display(),
                manifest.backup_id
            ),
        )
        .with_suggestion(if known.is_empty() {
            "this backup has no tablespaces; drop --tablespace-mapping".to_owned()
        } else {
            format!("its tablespaces were at: {}", known.join(", "))
        }));
    }
    // Tablespace directories (the base archive's root is the target, wherever it
    // comes in the archive order) must not nest in the target or in each other.
    let target = normalize_abs(
        &std::path::absolute(&opts.target)
            .unwrap_or_default()
            .to_string_lossy(),
    );
    let ts_roots: Vec<&PathBuf> = manifest
        .archives
        .iter()
        .zip(&roots)
        .filter(|(a, _)| is_tablespace(a))
        .map(|(_, r)| r)
        .collect();
    for (i, r) in ts_roots.iter().enumerate() {
        let overlaps_target = target
            .as_ref()
            .is_some_and(|t| r.starts_with(t) || t.starts_with(r));
        let overlaps_other = ts_roots[..i]
            .iter()
            .any(|o| o.starts_with(r) || r.starts_with(o));
        if overlaps_target || overlaps_other {
            return Err(Error::of_kind(
                ErrorKind::Usage,
                code::USAGE_TABLESPACE_MAPPING_INVALID,
                format!(
                    "tablespace directory {} overlaps the target or another tablespace",
                    r.display()
                ),
            )
            .with_suggestion(
                "map every tablespace to its own directory outside the target with --tablespace-mapping OLDDIR=NEWDIR",
            ));
        }
    }
    Ok(roots)
}

/// The symlink target to write: `pg_tblspc/<oid>` points at where that tablespace is
/// restored; every other link is written as the backup has it.
pub(super) fn link_target(
    a: &ArchiveEntry,
    rel: &str,
    stored: &str,
    manifest: &BackupManifest,
    roots: &[PathBuf],
) -> String {
    if is_tablespace(a) {
        return stored.to_owned();
    }
    let oid = rel
        .strip_prefix("pg_tblspc/")
        .and_then(|o| o.parse::<u32>().ok());
    oid.and_then(|oid| {
        manifest
            .archives
            .iter()
            .zip(roots)
            .find(|(t, _)| is_tablespace(t) && t.tablespace_oid == Some(oid))
            .map(|(_, r)| r.to_string_lossy().into_owned())
    })
    .unwrap_or_else(|| stored.to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DirRole {
    Target,
    Tablespace,
}

pub(super) fn not_empty(p: &Path, role: DirRole, what: &str) -> Error {
    match role {
        DirRole::Target => Error::of_kind(
            ErrorKind::Target,
            code::CONFLICT_TARGET_NOT_EMPTY,
            format!("the restore target {} {what}", p.display()),
        )
        .with_suggestion(
            "restore into a new or empty directory, or pass --delta to reuse the files of a data directory there; nothing was written",
        ),
        DirRole::Tablespace => Error::of_kind(
            ErrorKind::Target,
            code::CONFLICT_TABLESPACE_NOT_EMPTY,
            format!("the tablespace location {} {what}", p.display()),
        )
        .with_suggestion(
            "restore the tablespace elsewhere with --tablespace-mapping OLDDIR=NEWDIR, or empty that directory; nothing was written",
        ),
    }
}

/// Without `--delta`: the directory must be absent or empty.
pub(super) fn check_empty_dir(p: &Path, role: DirRole) -> Result<()> {
    match std::fs::read_dir(p) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(not_empty(p, role, "is not empty"));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            Err(not_empty(p, role, "is a file, not a directory"))
        }
        Err(e) => Err(crate::error::io(format!("read {}", p.display()), e)),
    }
}

/// With `--delta`: the target may hold a data directory that no server runs in; a
/// tablespace location may hold only PostgreSQL's `PG_<version>_<catalog>` directories.
pub(super) fn check_delta_dir(p: &Path, role: DirRole) -> Result<()> {
    let names: Vec<std::ffi::OsString> = match std::fs::read_dir(p) {
        Ok(rd) => rd
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| crate::error::io(format!("read {}", p.display()), e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(not_empty(p, role, "is a file, not a directory"))
        }
        Err(e) => return Err(crate::error::io(format!("read {}", p.display()), e)),
    };
    if names.is_empty() {
        return Ok(());
    }
    match role {
        DirRole::Target => {
            if let Some(pid) = running_postmaster(p)? {
                return Err(Error::of_kind(
                    ErrorKind::Target,
                    code::CONFLICT_TARGET_RUNNING,
                    format!(
                        "a PostgreSQL server (pid {pid}) is running in the restore target {}",
                        p.display()
                    ),
                )
                .with_suggestion(format!(
                    "stop it first (pg_ctl stop -D {}); nothing was changed",
                    p.display()
                )));
            }
            if !p.join("PG_VERSION").is_file() {
                return Err(Error::of_kind(
                    ErrorKind::Target,
                    code::CONFLICT_TARGET_NOT_DATA_DIRECTORY,
                    format!(
                        "--delta restores only over a PostgreSQL data directory, and {} is not empty and has no PG_VERSION",
                        p.display()
                    ),
                )
                .with_suggestion(
                    "point --target at a data directory or an empty one; nothing was changed",
                ));
            }
            Ok(())
        }
        DirRole::Tablespace => {
            if names
                .iter()
                .all(|n| n.to_str().is_some_and(|n| n.starts_with("PG_")))
            {
                Ok(())
            } else {
                Err(not_empty(
                    p,
                    role,
                    "holds files that are not a PostgreSQL tablespace",
                ))
            }
        }
    }
}

/// The pid in `dir/postmaster.pid` when that process is alive.
pub(super) fn running_postmaster(dir: &Path) -> Result<Option<u32>> {
    let pidfile = dir.join("postmaster.pid");
    let text = match std::fs::read_to_string(&pidfile) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(crate::error::io(format!("read {}", pidfile.display()), e)),
    };
    // A single-user backend writes its pid negated.
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i64>().ok())
        .and_then(|p| u32::try_from(p.unsigned_abs()).ok())
        .filter(|p| *p != 0)
    else {
        return Ok(None);
    };
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        // No way to tell here: assume the server is alive.
        return Ok(Some(pid));
    }
    Ok(proc.join(pid.to_string()).exists().then_some(pid))
}

pub(super) fn create_root(p: &Path) -> Result<()> {
    if !p.exists() {
        std::fs::create_dir_all(p)
            .map_err(|e| crate::error::io(format!("create {}", p.display()), e))?;
    }
    set_mode(p, 0o700)
}

/// Relative path -> kind, for every entry the archive restores (with implied parent
/// directories). The base archive also owns `backup_manifest` and the control file,
/// which are rewritten, so they are removed here.
pub(super) fn expected_entries(a: &ArchiveEntry, base: bool) -> HashMap<PathBuf, &FileKind> {
    const DIR: &FileKind = &FileKind::Dir;
    let mut out = HashMap::new();
    for f in &a.files {
        if base && f.path == CONTROL_FILE {
            continue;
        }
        let p = Path::new(&f.path);
        for anc in p.ancestors().skip(1) {
            if !anc.as_os_str().is_empty() {
                out.entry(anc.to_path_buf()).or_insert(DIR);
            }
        }
        out.insert(p.to_path_buf(), &f.kind);
    }
    out
}

/// Removes everything under `root` that the backup does not restore there, or that has
/// the wrong type; returns how many entries were removed (a directory counts once).
/// Symlinks are removed, never followed; the other restore roots are never touched.
pub(super) fn remove_extraneous(
    root: &Path,
    expected: &HashMap<PathBuf, &FileKind>,
    roots: &[PathBuf],
) -> Result<u64> {
    let mut removed = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let rd = std::fs::read_dir(&dir)
            .map_err(|e| crate::error::io(format!("read {}", dir.display()), e))?;
        for ent in rd {
            let ent = ent.map_err(|e| crate::error::io(format!("read {}", dir.display()), e))?;
            let child = rel.join(ent.file_name());
            let path = ent.path();
            if roots.iter().any(|r| r == &path && r != root) {
                continue;
            }
            let ft = ent
                .file_type()
                .map_err(|e| crate::error::io(format!("stat {}", path.display()), e))?;
            let keep = match expected.get(&child) {
                Some(FileKind::Dir) if ft.is_dir() => {
                    stack.push(child.clone());
                    true
                }
                Some(FileKind::File) => ft.is_file(),
                Some(FileKind::Symlink { .. }) => ft.is_symlink(),
                _ => false,
            };
            if keep {
                continue;
            }
            let res = if ft.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            res.map_err(|e| crate::error::io(format!("remove {}", path.display()), e))?;
            let rewritten = rel.as_os_str().is_empty() && ent.file_name() == PG_MANIFEST_FILE
                || child == Path::new(CONTROL_FILE);
            if !rewritten {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::BackupSelector;

    #[test]
    fn non_empty_target_is_refused_and_untouched() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("keep"), b"x").unwrap();
        let e = check_empty_dir(d.path(), DirRole::Target).unwrap_err();
        assert_eq!(e.code(), "conflict.target_not_empty");
        assert!(e.suggestion().unwrap().contains("--delta"));
        let e = check_empty_dir(d.path(), DirRole::Tablespace).unwrap_err();
        assert_eq!(e.code(), "conflict.tablespace_not_empty");
        assert_eq!(std::fs::read(d.path().join("keep")).unwrap(), b"x");
        // --delta refuses a non-empty directory that is not a data directory.
        let e = check_delta_dir(d.path(), DirRole::Target).unwrap_err();
        assert_eq!(e.code(), "conflict.target_not_data_directory");
        let e = check_delta_dir(d.path(), DirRole::Tablespace).unwrap_err();
        assert_eq!(e.code(), "conflict.tablespace_not_empty");
        assert_eq!(std::fs::read(d.path().join("keep")).unwrap(), b"x");
    }

    #[test]
    fn delta_refuses_a_live_postmaster_but_not_a_stale_pid_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("PG_VERSION"), b"15\n").unwrap();
        let me = std::process::id();
        std::fs::write(d.path().join("postmaster.pid"), format!("{me}\n/data\n")).unwrap();
        let e = check_delta_dir(d.path(), DirRole::Target).unwrap_err();
        assert_eq!(e.code(), "conflict.target_running");
        // A pid no process has (pid_max is at most 2^22).
        std::fs::write(d.path().join("postmaster.pid"), b"4194305\n/data\n").unwrap();
        check_delta_dir(d.path(), DirRole::Target).unwrap();
        std::fs::write(d.path().join("postmaster.pid"), b"garbage").unwrap();
        check_delta_dir(d.path(), DirRole::Target).unwrap();
    }

    fn manifest_with_tablespace(loc: &str) -> BackupManifest {
        let archive = |name: &str, oid: Option<u32>, loc: Option<&str>| ArchiveEntry {
            name: name.into(),
            tablespace_oid: oid,
            tablespace_location: loc.map(str::to_owned),
            files: Vec::new(),
        };
        BackupManifest {
            format: 1,
            backup_id: "20260101T000000Z".into(),
            deployment: "d".into(),
            system_identifier: "1".into(),
            timeline: 1,
            start_lsn: hs_pg::Lsn(0x200_0028),
            stop_lsn: hs_pg::Lsn(0x200_0100),
            start_time: String::new(),
            stop_time: String::new(),
            pg_version: 150000,
            label: String::new(),
            // PostgreSQL sends tablespaces first and the base directory last.
            archives: vec![
                archive("16384.tar", Some(16384), Some(loc)),
                archive("base.tar", None, None),
            ],
            pg_backup_manifest: String::new(),
            incremental: None,
            stats: hs_repo::BackupStats {
                logical_bytes: 0,
                stored_bytes: 0,
                chunks: 0,
                new_chunks: 0,
                files: 0,
                sent_bytes: 0,
            },
        }
    }

    #[test]
    fn tablespace_roots_follow_mappings_and_refuse_overlaps() {
        let m = manifest_with_tablespace("/srv/ts1/");
        let mut opts = RestoreOptions::new("d", BackupSelector::Latest, "/restore/data".into());
        let roots = archive_roots(&m, &opts).unwrap();
        assert_eq!(
            roots,
            [PathBuf::from("/srv/ts1"), PathBuf::from("/restore/data")]
        );

        opts.tablespace_mapping = vec!["/srv/ts1=/restore/ts1".parse().unwrap()];
        let roots = archive_roots(&m, &opts).unwrap();
        assert_eq!(roots[0], Path::new("/restore/ts1"));
        let base = &m.archives[1];
        assert_eq!(
            link_target(base, "pg_tblspc/16384", "/srv/ts1", &m, &roots),
            "/restore/ts1"
        );
        assert_eq!(link_target(base, "pg_tblspc/99", "/x", &m, &roots), "/x");

        opts.tablespace_mapping = vec!["/srv/other=/restore/ts1".parse().unwrap()];
        let e = archive_roots(&m, &opts).unwrap_err();
        assert_eq!(e.code(), "usage.tablespace_mapping_unmatched");
        assert!(e.suggestion().unwrap().contains("/srv/ts1"));

        opts.tablespace_mapping = vec!["/srv/ts1=/restore/data/ts".parse().unwrap()];
        let e = archive_roots(&m, &opts).unwrap_err();
        assert_eq!(e.code(), "usage.tablespace_mapping_invalid");
    }

    #[test]
    fn tablespace_mapping_parses_like_pg_basebackup() {
        let m: TablespaceMapping = "/srv/ts1/=/mnt//new".parse().unwrap();
        assert_eq!(m.old_dir, Path::new("/srv/ts1"));
        assert_eq!(m.new_dir, Path::new("/mnt/new"));
        let m: TablespaceMapping = r"/a\=b=/c".parse().unwrap();
        assert_eq!(m.old_dir, Path::new("/a=b"));
        assert_eq!(m.new_dir, Path::new("/c"));
        for bad in ["/a", "a=/b", "/a=b", "/a=/b=/c", "/a/../b=/c", "=", "/a="] {
            let e = bad.parse::<TablespaceMapping>().unwrap_err();
            assert_eq!(e.code(), "usage.tablespace_mapping_invalid", "{bad}");
        }
    }

    #[test]
    fn removal_keeps_expected_entries_and_never_follows_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("data");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(root.join("base/1")).unwrap();
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::fs::write(outside.join("sub/precious"), b"p").unwrap();
        std::fs::write(root.join("base/1/keep"), b"k").unwrap();
        std::fs::write(root.join("base/1/extra"), b"x").unwrap();
        std::fs::write(root.join("backup_manifest"), b"m").unwrap();
        std::fs::create_dir(root.join("junkdir")).unwrap();
        std::fs::write(root.join("junkdir/f"), b"x").unwrap();
        // A link to a directory outside, where the backup has a directory of that name.
        std::os::unix::fs::symlink(&outside, root.join("base/2")).unwrap();
        let entry = |path: &str, kind: FileKind| hs_repo::FileEntry {
            path: path.into(),
            kind,
            mode: 0o700,
            mtime: 0,
            size: 0,
            chunks: Vec::new(),
            chunk_lists: Vec::new(),
        };
        let a = ArchiveEntry {
            name: "base".into(),
            tablespace_oid: None,
            tablespace_location: None,
            files: vec![
                entry("base/1/keep", FileKind::File),
                entry("base/2", FileKind::Dir),
            ],
        };
        let expected = expected_entries(&a, true);
        let removed = remove_extraneous(&root, &expected, std::slice::from_ref(&root)).unwrap();
        assert_eq!(removed, 3, "extra, junkdir and the base/2 link");
        assert!(root.join("base/1/keep").is_file());
        assert!(!root.join("base/1/extra").exists());
        assert!(!root.join("backup_manifest").exists());
        assert!(!root.join("junkdir").exists());
        assert!(std::fs::symlink_metadata(root.join("base/2")).is_err());
        assert_eq!(std::fs::read(outside.join("sub/precious")).unwrap(), b"p");
    }
}
