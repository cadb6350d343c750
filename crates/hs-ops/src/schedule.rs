//! `doctor`'s schedule check: whether the packaged backup timer
//! (`pg_hardstorage-backup@<deployment>.timer`, packaging/systemd) is enabled and when it
//! fires next. With systemd running, `systemctl show` says when (`NextElapseUSecRealtime`);
//! without it, the unit files say what is configured (`OnCalendar=`, drop-ins included).

use std::path::{Path, PathBuf};

/// Where systemd units are installed: `$PG_HARDSTORAGE_SYSTEMD_DIR`, else
/// `/etc/systemd/system`.
pub fn systemd_dir() -> PathBuf {
    std::env::var_os("PG_HARDSTORAGE_SYSTEMD_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("/etc/systemd/system"), PathBuf::from)
}

/// What was found about a deployment's backup timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// No enabled `pg_hardstorage-backup@<deployment>.timer` under the directory.
    NotInstalled {
        /// The unit looked for.
        unit: String,
    },
    /// Enabled; `next` is systemd's answer when it runs, `calendar` the unit files'.
    Enabled {
        /// The unit.
        unit: String,
        /// `OnCalendar=` values in effect (an empty assignment in a drop-in resets).
        calendar: Vec<String>,
        /// `RandomizedDelaySec=`, if set.
        delay: Option<String>,
        /// When systemd will start it next, as `systemctl show` prints it.
        next: Option<String>,
    },
}

/// Looks the deployment's timer up under `dir` (see [`systemd_dir`]).
pub fn backup_schedule(dir: &Path, deployment: &str) -> Schedule {
    let unit = format!("pg_hardstorage-backup@{deployment}.timer");
    let wants = dir.join("timers.target.wants").join(&unit);
    if !wants.exists() {
        return Schedule::NotInstalled { unit };
    }
    // The instance's own file, else the template; then drop-ins in name order.
    let mut files = vec![if dir.join(&unit).is_file() {
        dir.join(&unit)
    } else {
        wants.clone()
    }];
    for d in [
        dir.join("pg_hardstorage-backup@.timer.d"),
        dir.join(format!("{unit}.d")),
    ] {
        let mut confs: Vec<PathBuf> = std::fs::read_dir(&d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        confs.sort();
        files.extend(confs);
    }
    let (mut calendar, mut delay) = (Vec::new(), None);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for line in text.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("OnCalendar=") {
                if v.trim().is_empty() {
                    calendar.clear();
                } else {
                    calendar.push(v.trim().to_owned());
                }
            } else if let Some(v) = line.strip_prefix("RandomizedDelaySec=") {
                delay = Some(v.trim().to_owned()).filter(|v| !v.is_empty());
            }
        }
    }
    let next = systemd_next(&unit);
    Schedule::Enabled {
        unit,
        calendar,
        delay,
        next,
    }
}

/// `systemctl show -p NextElapseUSecRealtime --value UNIT` when systemd runs here.
fn systemd_next(unit: &str) -> Option<String> {
    if !Path::new("/run/systemd/system").is_dir() {
        return None;
    }
    let out = std::process::Command::new("systemctl")
        .args(["show", "-p", "NextElapseUSecRealtime", "--value", unit])
        .output()
        .ok()?;
    let next = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !next.is_empty() && next != "n/a").then_some(next)
}
