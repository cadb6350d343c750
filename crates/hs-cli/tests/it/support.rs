//! Helpers: run the binary, parse its JSON envelope, scan a repository's bytes.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// A scratch directory with a keyring and a file:// repository URL inside it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("hs-cli-it-")
            .tempdir()
            .expect("tempdir");
        Scratch { dir }
    }
    pub fn keyring(&self) -> PathBuf {
        self.dir.path().join("keyring")
    }
    pub fn repo_dir(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    pub fn repo_url(&self) -> String {
        format!("file://{}", self.repo_dir().display())
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// Names of the lease objects under the repository's `locks/` (none when absent).
    pub fn leases(&self) -> Vec<String> {
        match std::fs::read_dir(self.repo_dir().join("locks")) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
    /// Lets the `postgres` OS user (a restored server running `wal fetch` as its
    /// restore_command) reach the scratch directory and read the repository, and the
    /// keyring too when `keyring` (when the tests run as root; no-op otherwise).
    pub fn share_with_postgres(&self, keyring: bool) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        hs_testkit::chown_to_postgres(&self.repo_dir()).unwrap();
        if keyring {
            hs_testkit::chown_to_postgres(&self.keyring()).unwrap();
        }
    }
}

/// What one run of the binary did.
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The JSON envelope on stdout (the run must have used `-o json`).
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
    pub fn ok(&self) -> Value {
        assert_eq!(
            self.status, 0,
            "command failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        let v = self.json();
        assert_eq!(v["schema"], "pg_hardstorage.v1");
        assert_eq!(v["ok"], true);
        v["result"].clone()
    }
    pub fn err_code(&self) -> String {
        let v = self.json();
        assert_eq!(v["ok"], false, "expected failure: {}", self.stdout);
        assert_eq!(
            v["error"]["exit_code"].as_i64(),
            Some(i64::from(self.status))
        );
        assert!(
            v["error"]["suggestion"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "error without a suggestion: {}",
            self.stdout
        );
        v["error"]["code"].as_str().unwrap_or_default().to_owned()
    }
}

impl Run {
    /// Runs `cmd` to completion and captures its exit status and output.
    pub fn of(cmd: &mut Command) -> Run {
        let out = cmd.output().expect("run pg_hardstorage");
        Run {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// The `pg_hardstorage` binary, without the repository and connection of the
/// environment the tests run in.
pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pg_hardstorage"));
    cmd.env_remove("PG_HARDSTORAGE_REPO")
        .env_remove("PG_HARDSTORAGE_PG_CONNECTION");
    cmd
}

/// `pg_hardstorage ARGS -o json --keyring KEYRING`, not yet run.
pub fn json_command(args: &[&str], keyring: &Path) -> Command {
    let mut cmd = bin();
    cmd.args(args)
        .args(["-o", "json", "--keyring"])
        .arg(keyring);
    cmd
}

/// Runs `pg_hardstorage ARGS --keyring <scratch keyring>` with human output.
pub fn human(s: &Scratch, args: &[&str]) -> std::process::Output {
    bin()
        .args(args)
        .arg("--keyring")
        .arg(s.keyring())
        .output()
        .expect("run pg_hardstorage")
}

/// A new PostgreSQL cluster (hs-testkit's defaults) after `sql` ran in it.
pub fn cluster_with(sql: &str) -> hs_testkit::PgCluster {
    let pg =
        hs_testkit::PgCluster::start(hs_testkit::PgOptions::default()).expect("start PostgreSQL");
    pg.psql(sql).unwrap();
    pg
}

/// Runs `pg_hardstorage` with the scratch keyring and `-o json`.
pub fn hs(s: &Scratch, args: &[&str]) -> Run {
    hs_with(&s.keyring(), args)
}

/// Runs the binary with an explicit keyring (and `-o json`).
pub fn hs_with(keyring: &Path, args: &[&str]) -> Run {
    Run::of(&mut json_command(args, keyring))
}

/// `backup DEPLOYMENT --pg-connection CONN --repo URL`.
pub fn backup(s: &Scratch, deployment: &str, conn: &str, url: &str) -> Run {
    hs(
        s,
        &["backup", deployment, "--pg-connection", conn, "--repo", url],
    )
}

/// The arguments `restore DEPLOYMENT BACKUP --target TARGET --repo URL EXTRA...`.
pub fn restore_args<'a>(
    deployment: &'a str,
    backup: &'a str,
    target: &'a Path,
    url: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "restore",
        deployment,
        backup,
        "--target",
        target.to_str().unwrap(),
        "--repo",
        url,
    ];
    args.extend_from_slice(extra);
    args
}

/// `restore DEPLOYMENT BACKUP --target TARGET --repo URL` and the `extra` flags.
pub fn restore(
    s: &Scratch,
    deployment: &str,
    backup: &str,
    target: &Path,
    url: &str,
    extra: &[&str],
) -> Run {
    hs(s, &restore_args(deployment, backup, target, url, extra))
}

/// The backup ids of a `list` result, in its order.
pub fn backup_ids(list: &Value) -> Vec<&str> {
    list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["backup_id"].as_str().unwrap())
        .collect()
}

/// Starts the restored server in `dir` and waits (120 s) until it replayed the WAL
/// its recovery settings ask for and promoted; panics with the server log otherwise.
pub fn start_restored(dir: &Path) -> hs_testkit::PgCluster {
    let c = hs_testkit::PgCluster::start_existing(dir).expect("start restored cluster");
    c.wait_for_promotion(std::time::Duration::from_secs(120))
        .unwrap_or_else(|e| {
            panic!(
                "recovery in {} did not finish: {e}\n{}",
                dir.display(),
                c.log_tail(30)
            )
        });
    c
}

/// `repo init` of the scratch repository; returns its URL and the replication conninfo
/// of `pg`.
pub fn init_repo(s: &Scratch, pg: &hs_testkit::PgCluster) -> (String, String) {
    let url = s.repo_url();
    hs(s, &["repo", "init", &url]).ok();
    (url, pg.replication_conninfo())
}

/// `repo init` of the scratch repository, then one `backup` of `deployment` from `pg`;
/// returns the repository URL, the replication conninfo and the backup's JSON result.
pub fn init_and_backup(
    s: &Scratch,
    pg: &hs_testkit::PgCluster,
    deployment: &str,
) -> (String, String, Value) {
    let (url, conn) = init_repo(s, pg);
    let backup = backup(s, deployment, &conn, &url).ok();
    (url, conn, backup)
}

/// Total bytes of every file under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// Every regular file under `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let ft = e.file_type().expect("file_type");
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// Whether `needle` occurs in any file under `dir`.
pub fn any_file_contains(dir: &Path, needle: &[u8]) -> Option<PathBuf> {
    files_under(dir).into_iter().find(|p| {
        let data = std::fs::read(p).unwrap_or_default();
        data.windows(needle.len()).any(|w| w == needle)
    })
}

/// A running `wal stream` of the scratch repository; killed on drop, so a failing
/// test leaves no process behind.
pub struct Streamer {
    pub child: Option<std::process::Child>,
}

impl Streamer {
    /// Starts `wal stream DEPLOYMENT` with `extra` flags (stderr to `log`, if given).
    pub fn start(s: &Scratch, deployment: &str, conn: &str, url: &str, extra: &[&str]) -> Streamer {
        let log = std::fs::File::create(s.path(&format!("stream-{deployment}.log"))).expect("log");
        let child = bin()
            .args([
                "wal",
                "stream",
                deployment,
                "--pg-connection",
                conn,
                "--repo",
                url,
            ])
            .args(extra)
            .args(["-o", "json", "--keyring"])
            .arg(s.keyring())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn wal stream");
        Streamer { child: Some(child) }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }

    /// SIGKILL, then reaps the process.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        child.wait().expect("reap");
    }

    /// SIGTERM, then the exit status and stdout.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        let child = self.child.take().expect("running");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        let out = child.wait_with_output().expect("wait");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An LSN `X/Y` as a number.
pub fn lsn(s: &str) -> u64 {
    s.trim().parse::<hs_proto::Lsn>().expect("an LSN").0
}

/// The `restart_lsn` of `pg_hardstorage_<deployment>`, what the streamer reported durable.
pub fn slot_lsn(pg: &hs_testkit::PgCluster, deployment: &str) -> Option<u64> {
    let r = pg
        .psql(&format!(
            "SELECT coalesce(restart_lsn::text, '') FROM pg_replication_slots \
             WHERE slot_name = 'pg_hardstorage_{deployment}'"
        ))
        .unwrap_or_default();
    (!r.is_empty()).then(|| lsn(&r))
}

/// Waits until the streamer of `deployment` reported `target` durable.
pub fn wait_durable(
    pg: &hs_testkit::PgCluster,
    deployment: &str,
    target: u64,
    timeout: std::time::Duration,
) {
    let deadline = std::time::Instant::now() + timeout;
    while slot_lsn(pg, deployment).is_none_or(|l| l < target) {
        assert!(
            std::time::Instant::now() < deadline,
            "the streamer did not reach {target:X}; slot at {:?}",
            slot_lsn(pg, deployment)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Completes the WAL segment holding the primary's current LSN and waits (60 s) until
/// the streamer of `deployment` reported everything up to that LSN durable; returns it.
pub fn archive_current_wal(pg: &hs_testkit::PgCluster, deployment: &str) -> u64 {
    let end = lsn(&pg.psql("SELECT pg_current_wal_lsn()").unwrap());
    pg.psql("SELECT pg_switch_wal()").unwrap();
    wait_durable(pg, deployment, end, std::time::Duration::from_secs(60));
    end
}

/// Waits until the slot of `deployment` exists and holds a restart LSN.
pub fn wait_slot(pg: &hs_testkit::PgCluster, deployment: &str, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while slot_lsn(pg, deployment).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the streamer did not create its slot"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Waits until the slot of `deployment` exists and is active (the streamer streams).
pub fn wait_streaming(pg: &hs_testkit::PgCluster, deployment: &str, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let active = pg
            .psql(&format!(
                "SELECT count(*) FROM pg_replication_slots \
                 WHERE slot_name = 'pg_hardstorage_{deployment}' AND active"
            ))
            .unwrap_or_default();
        if active == "1" {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the streamer never became active"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Runs `pg_hardstorage wal fetch` as PostgreSQL would (no `-o json`), returning
/// its exit status and stderr.
pub fn wal_fetch(s: &Scratch, args: &[&str], keyring: &Path) -> (i32, String) {
    let out = bin()
        .args(["wal", "fetch"])
        .args(args)
        .arg("--keyring")
        .arg(keyring)
        .current_dir(s.dir.path())
        .output()
        .expect("run wal fetch");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
