//! Checks a restore makes before it reports success, so that recovery cannot
//! stop on something that was knowable at restore time:
//!
//! - [`probe_restore_command`] runs the `restore_command` written into the data
//!   directory once, the way PostgreSQL will: through `/bin/sh`, in the data
//!   directory, as the OS user the server runs as. A keyring only root can read,
//!   credentials that exist only in the operator's shell, or a repository that
//!   user cannot reach show up here instead of at the server's first WAL fetch.
//! - [`verify_plan_wal`] reads (not only lists) every archived segment the plan
//!   says recovery will replay, so a damaged segment is found before anything is
//!   written (`restore --verify-wal`).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use hs_base::code;
use hs_repo::{parse_wal_segment_name, Repository};

use crate::error::{Error, ErrorKind, Result};
use crate::plan::RestorePlan;

/// Name of the file the probe writes (and removes) in the data directory. It is
/// outside `pg_wal/`, so `wal fetch` neither spools nor prefetches for it.
const PROBE_FILE: &str = "pg_hardstorage_probe";

/// Who will run `restore_command`, as far as this process can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerUser {
    /// This process's own user: the probe runs the command directly.
    Current,
    /// Another OS user (by name): the probe runs the command with `runuser`,
    /// which needs root.
    Other(String),
    /// Unknown: this process runs as root and the data directory is owned by
    /// root, so the server's user is not decided yet (PostgreSQL refuses to run
    /// as root). Nothing can be checked; the caller should say so.
    Undecided,
}

impl ServerUser {
    /// The user that will run the restored server: `explicit` (`--restore-user`)
    /// if given, else the owner of `data_dir` when this process is root (an
    /// operator restoring as root hands the directory over before starting),
    /// else this process's user.
    pub fn for_data_dir(data_dir: &Path, explicit: Option<&str>) -> Result<ServerUser> {
        let euid = effective_uid()?;
        if let Some(u) = explicit {
            if euid != 0 && user_name(euid).as_deref() != Some(u) {
                return Err(Error::of_kind(
                    ErrorKind::Usage,
                    code::USAGE_RESTORE_USER_NEEDS_ROOT,
                    format!(
                        "--restore-user {u} needs root: this process cannot act as another user"
                    ),
                )
                .with_suggestion("run restore as root, or as that user without --restore-user"));
            }
            return Ok(if euid == 0 && u != "root" {
                ServerUser::Other(u.to_owned())
            } else {
                ServerUser::Current
            });
        }
        if euid != 0 {
            return Ok(ServerUser::Current);
        }
        let owner = std::fs::metadata(data_dir)
            .map_err(|e| crate::error::io(format!("cannot stat {}", data_dir.display()), e))?
            .uid();
        if owner == 0 {
            return Ok(ServerUser::Undecided);
        }
        match user_name(owner) {
            Some(name) => Ok(ServerUser::Other(name)),
            None => Ok(ServerUser::Undecided),
        }
    }

    /// How to name this user in a message.
    pub fn describe(&self) -> String {
        match self {
            ServerUser::Current => user_name_of_self().unwrap_or_else(|| "this user".into()),
            ServerUser::Other(u) => u.clone(),
            ServerUser::Undecided => "the server's OS user".into(),
        }
    }
}

/// Gives `dirs` (the data directory and tablespace directories) to `user`, as
/// `chown -R user:` would, so that the server (and [`probe_restore_command`]) can use them.
pub fn hand_over(dirs: &[&Path], user: &str) -> Result<()> {
    for dir in dirs {
        let out = Command::new("chown")
            .arg("-R")
            .arg(format!("{user}:"))
            .arg("--")
            .arg(dir)
            .output()
            .map_err(|e| crate::error::io("cannot run chown".into(), e))?;
        if !out.status.success() {
            return Err(Error::of_kind(
                ErrorKind::Target,
                code::IO_RESTORE_CHOWN_FAILED,
                format!(
                    "cannot give {} to {user}: {}",
                    dir.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            )
            .with_suggestion("check that the user exists (`id USER`) and run restore as root"));
        }
    }
    Ok(())
}

/// Runs `restore_command` (as written into `data_dir`'s recovery settings) once
/// for `file`, a WAL file the repository holds, as `user` would when the server
/// starts, and removes what it wrote. Fails with `preflight.restore_command_failed`
/// (naming the user, the exit status and the command's own error line) when the
/// command would not serve the file.
pub fn probe_restore_command(
    restore_command: &str,
    data_dir: &Path,
    user: &ServerUser,
    file: &str,
) -> Result<()> {
    let command = expand_placeholders(restore_command, file, PROBE_FILE);
    let mut cmd = match user {
        ServerUser::Other(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--", "/bin/sh", "-c"]).arg(&command);
            c
        }
        ServerUser::Current | ServerUser::Undecided => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(&command);
            c
        }
    };
    let out = cmd.current_dir(data_dir).output();
    let _ = std::fs::remove_file(data_dir.join(PROBE_FILE));
    let out = out.map_err(|e| {
        Error::of_kind(
            ErrorKind::Preflight,
            code::PREFLIGHT_RUNUSER_MISSING,
            format!("cannot run the restore_command check: {e}"),
        )
        .with_suggestion("install util-linux (runuser), or run restore as the server's OS user")
    })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let cause = stderr
        .lines()
        .find(|l| l.starts_with("error["))
        .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("no error output")
        .trim();
    let status = out.status.code().map_or_else(
        || "was killed by a signal".to_owned(),
        |c| format!("exited {c}"),
    );
    let who = user.describe();
    Err(Error::of_kind(
        ErrorKind::Preflight,
        code::PREFLIGHT_RESTORE_COMMAND_FAILED,
        format!(
            "the data directory is restored, but its restore_command fails when run as {who}, \
             so the server could not replay any archived WAL: fetching {file} {status}: {cause}"
        ),
    )
    .with_suggestion(format!(
        "make the pg_hardstorage program, the keyring and the repository usable by {who} in \
         the server's environment: install the program outside a private home directory \
         (e.g. /usr/local/bin), copy the keyring for it (`install -o {who} -m 0600 KEYRING \
         DEST`), then run restore again with --restore-keyring DEST --delta (it keeps the \
         files already restored)"
    )))
}

/// PostgreSQL's expansion of `%f`, `%p` and `%%` in `restore_command`.
fn expand_placeholders(command: &str, file: &str, path: &str) -> String {
    let mut out = String::with_capacity(command.len() + file.len() + path.len());
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('f') => out.push_str(file),
            Some('p') => out.push_str(path),
            Some('%') => out.push('%'),
            _ => {
                out.push('%');
                continue;
            }
        }
        chars.next();
    }
    out
}

/// Reads every archived segment `plan` says recovery will replay (`wal_from` ..
/// `wal_to` on the backup's timeline and every timeline it switches to, and the
/// `.partial` when the plan ends in one), each checked as `wal fetch` checks it
/// (authentication tag, name binding, length, hash). Returns how many were read;
/// the first one that does not verify is the error, named.
pub async fn verify_plan_wal(repo: &Repository, plan: &RestorePlan) -> Result<u64> {
    let (Some(from), Some(to)) = (plan.wal_from.as_deref(), plan.wal_to.as_deref()) else {
        return Ok(0);
    };
    let per_xlogid = 0x1_0000_0000u64 / plan.wal_segment_size.max(1);
    let seg_no = |name: &str| {
        parse_wal_segment_name(name)
            .map(|(_, log, seg)| u64::from(log) * per_xlogid + u64::from(seg))
    };
    let (Some(first), Some(last)) = (seg_no(from), seg_no(to)) else {
        return Ok(0);
    };
    let mut timelines: Vec<u32> = vec![plan.backup.timeline, plan.timeline];
    timelines.extend(plan.switches.iter().map(|s| s.to));
    let listing = repo.list_wal(&plan.deployment).await?;
    let mut read = 0;
    for s in &listing.segments {
        let n = s.segno(plan.wal_segment_size);
        if timelines.contains(&s.timeline) && (first..=last).contains(&n) {
            repo.get_wal(&plan.deployment, &s.name).await?;
            read += 1;
        }
    }
    if plan.wal_to_partial {
        repo.get_wal(&plan.deployment, &format!("{to}.partial"))
            .await?;
        read += 1;
    }
    Ok(read)
}

fn effective_uid() -> Result<u32> {
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(|e| crate::error::io("cannot read /proc/self".into(), e))
}

fn user_name(uid: u32) -> Option<String> {
    let out = Command::new("id")
        .args(["-nu", &uid.to_string()])
        .output()
        .ok()?;
    let name = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !name.is_empty()).then_some(name)
}

fn user_name_of_self() -> Option<String> {
    user_name(effective_uid().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_expand_as_postgresql_does() {
        assert_eq!(
            expand_placeholders("'x' wal fetch %f %p 100%% %q", "F", "P"),
            "'x' wal fetch F P 100% %q"
        );
        assert_eq!(expand_placeholders("end%", "F", "P"), "end%");
    }

    #[test]
    fn a_failing_command_is_reported_with_its_error_line() {
        let dir = tempfile::tempdir().unwrap();
        let err = probe_restore_command(
            "echo 'error[io.keyring_read_failed]: permission denied' >&2; exit 201",
            dir.path(),
            &ServerUser::Current,
            "000000010000000000000001",
        )
        .unwrap_err();
        assert_eq!(err.code(), "preflight.restore_command_failed");
        assert!(err.to_string().contains("exited 201"), "{err}");
        assert!(err.to_string().contains("io.keyring_read_failed"), "{err}");
    }

    #[test]
    fn a_working_command_passes_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        probe_restore_command("echo %f > %p", dir.path(), &ServerUser::Current, "F").unwrap();
        assert!(!dir.path().join(PROBE_FILE).exists());
    }
}
