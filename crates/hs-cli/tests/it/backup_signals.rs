//! SIGTERM / SIGINT during `backup`: exit 5 with `aborted.signal`, no manifest, and the
//! repository lease released so that `repo gc` is not held up. (A backup that fails
//! after taking its lease: hs-backup's tests/it/lease.rs.)

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hs_testkit::{PgCluster, PgOptions};

use crate::support::{files_under, hs, init_repo, json_command, Run, Scratch};

/// A running `backup`; killed on drop so a failing test leaves no process behind.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_backup(s: &Scratch, conn: &str, url: &str, max_rate: &str) -> Running {
    let args = [
        "backup",
        "demo",
        "--pg-connection",
        conn,
        "--repo",
        url,
        "--max-rate",
        max_rate,
    ];
    let child = json_command(&args, &s.keyring())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn backup");
    Running(Some(child))
}

/// Pack objects under the repository's `data/` (not temporaries of writes in flight).
fn packs(s: &Scratch) -> usize {
    let dir = s.repo_dir().join("data");
    if !dir.exists() {
        return 0;
    }
    files_under(&dir)
        .iter()
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".tmp"))
        })
        .count()
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `signal` to the running backup and returns how it ended.
fn signal_and_wait(r: &mut Running, signal: &str) -> (Run, Duration) {
    let mut child = r.0.take().expect("backup running");
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the backup ended before the signal"
    );
    let sent = Instant::now();
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("backup still running 30 s after {signal}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = sent.elapsed();
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (
        Run {
            status: status.code().unwrap_or(-1),
            stdout,
            stderr,
        },
        took,
    )
}

fn assert_aborted_by(run: &Run, signal: &str, took: Duration) {
    assert_eq!(
        run.status, 5,
        "backup after {signal}: exit {} (signal {:?})\nstdout:\n{}\nstderr:\n{}",
        run.status, run.status, run.stdout, run.stderr
    );
    assert_eq!(run.err_code(), "aborted.signal");
    let msg = run.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        msg.contains(signal),
        "message does not name {signal}: {msg}"
    );
    assert!(
        took < Duration::from_secs(10),
        "backup took {took:?} to stop after {signal}"
    );
}

fn no_backups(s: &Scratch, url: &str) {
    let l = hs(s, &["list", "demo", "--repo", url]).ok();
    assert_eq!(
        l["backups"].as_array().map(Vec::len),
        Some(0),
        "an aborted backup was listed: {l}"
    );
}

#[test]
fn sigterm_during_backup_exits_5_releases_the_lease_and_gc_is_not_held_up() {
    let pg = PgCluster::start(PgOptions::default()).expect("start PostgreSQL");
    // Incompressible data, so that packs are uploaded while the backup still runs.
    pg.psql(
        "CREATE TABLE noise AS SELECT decode(md5(random()::text) || md5(random()::text), 'hex') AS b \
         FROM generate_series(1, 1000000)",
    )
    .expect("create table");
    let s = Scratch::new();
    let (url, conn) = init_repo(&s, &pg);

    let mut r = start_backup(&s, &conn, &url, "4096");
    wait_until(
        "the backup's lease and first pack",
        Duration::from_secs(60),
        || !s.leases().is_empty() && packs(&s) > 0,
    );
    let (run, took) = signal_and_wait(&mut r, "TERM");
    assert_aborted_by(&run, "SIGTERM", took);
    assert!(s.leases().is_empty(), "lease left behind: {:?}", s.leases());
    no_backups(&s, &url);

    // The partial packs are unreferenced: a gc right after condemns them and, with grace
    // 0 and no backup lease live any more, deletes them in the same run.
    let gc = hs(
        &s,
        &["repo", "gc", "--repo", &url, "--apply", "--grace", "0s"],
    )
    .ok();
    let condemned = gc["condemned"].as_array().map(Vec::len).unwrap_or(0);
    assert!(condemned > 0, "no partial pack to condemn: {gc}");
    assert_eq!(
        gc["waiting"].as_array().map(Vec::len),
        Some(0),
        "gc held up: {gc}"
    );
    assert_eq!(
        gc["deleted"].as_array().map(Vec::len),
        Some(condemned),
        "{gc}"
    );
    assert_eq!(packs(&s), 0);
}

#[test]
fn sigint_during_backup_exits_5_and_releases_the_lease() {
    let pg = PgCluster::start(PgOptions::default()).expect("start PostgreSQL");
    let s = Scratch::new();
    let (url, conn) = init_repo(&s, &pg);

    // 32 kB/s: minutes for a fresh cluster, so the backup is surely still running.
    let mut r = start_backup(&s, &conn, &url, "32");
    wait_until("the backup to stream", Duration::from_secs(60), || {
        !s.leases().is_empty()
            && pg
                .psql("SELECT count(*) FROM pg_stat_progress_basebackup")
                .is_ok_and(|n| n == "1")
    });
    let (run, took) = signal_and_wait(&mut r, "INT");
    assert_aborted_by(&run, "SIGINT", took);
    assert!(s.leases().is_empty(), "lease left behind: {:?}", s.leases());
    no_backups(&s, &url);
    // The server's side of the backup ends too.
    wait_until(
        "the server to end the backup",
        Duration::from_secs(30),
        || {
            pg.psql("SELECT count(*) FROM pg_stat_progress_basebackup")
                .is_ok_and(|n| n == "0")
        },
    );
}
