//! `wal stream` under pgbench load, killed with SIGKILL and restarted repeatedly;
//! afterwards a restore replays every committed transaction through `wal fetch`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hs_testkit::{PgCluster, PgOptions};

use crate::support::{hs, init_and_backup, Scratch};

/// A running `wal stream`; killed on drop so a failing test leaves no process behind.
pub struct Streamer(pub Option<Child>);

impl Drop for Streamer {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn start_streamer(s: &Scratch, conn: &str, url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pg_hardstorage"))
        .args([
            "wal",
            "stream",
            "demo",
            "--pg-connection",
            conn,
            "--repo",
            url,
        ])
        .args(["-o", "json", "--keyring"])
        .arg(s.keyring())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn wal stream")
}

pub fn lsn(s: &str) -> u64 {
    let (hi, lo) = s.trim().split_once('/').expect("an LSN");
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// Waits until the slot's restart_lsn (what the streamer reported durable) reaches `target`.
pub fn wait_durable(pg: &PgCluster, target: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let r = pg
            .psql("SELECT coalesce(restart_lsn::text, '0/0') FROM pg_replication_slots WHERE slot_name = 'pg_hardstorage_demo'")
            .unwrap_or_default();
        if !r.is_empty() && lsn(&r) >= target {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "streamer did not reach {target:X}; slot at {r}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn stream_survives_kill_9_and_restore_replays_every_commit() {
    let pg = PgCluster::start(PgOptions::default()).expect("start PostgreSQL");
    pg.pgbench(&["-i", "-s", "2"]).expect("pgbench -i");
    let s = Scratch::new();
    let (url, conn, _) = init_and_backup(&s, &pg, "demo");

    let pre = hs(&s, &["wal", "preflight", "demo", "--pg-connection", &conn]).ok();
    assert_eq!(pre["ready"], true, "{pre}");

    let mut guard = Streamer(Some(start_streamer(&s, &conn, &url)));
    let load = {
        let mut cmd = pg.client_command("pgbench");
        cmd.args(["-n", "-c", "2", "-j", "2", "-T", "8"]);
        std::thread::spawn(move || cmd.output().expect("pgbench run"))
    };
    // Kill the streamer with SIGKILL at different points while the load runs.
    for pause_ms in [700u64, 1300, 400, 1900] {
        std::thread::sleep(Duration::from_millis(pause_ms));
        let mut old = guard.0.take().expect("streamer");
        old.kill().expect("kill -9");
        old.wait().expect("reap");
        guard.0 = Some(start_streamer(&s, &conn, &url));
    }
    let out = load.join().expect("load thread");
    assert!(
        out.status.success(),
        "pgbench: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let committed = pg.psql("SELECT count(*) FROM pgbench_history").unwrap();
    let end = lsn(&pg.psql("SELECT pg_current_wal_lsn()").unwrap());
    assert!(committed.parse::<u64>().unwrap() > 0);
    // Complete the segment holding the last commit, so it is committed as a full segment.
    pg.psql("SELECT pg_switch_wal()").unwrap();
    wait_durable(&pg, end, Duration::from_secs(60));

    // SIGTERM: a clean stop with a JSON summary.
    let streamer = guard.0.take().expect("streamer");
    let pid = streamer.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let done = streamer.wait_with_output().unwrap();
    assert!(done.status.success(), "wal stream exit {:?}", done.status);
    let summary: serde_json::Value = serde_json::from_slice(&done.stdout).expect("wal stream JSON");
    assert_eq!(summary["ok"], true);

    let listing = hs(&s, &["wal", "list", "demo", "--repo", &url, "--gaps-only"]).ok();
    assert_eq!(
        listing["gaps"].as_array().map(Vec::len),
        Some(0),
        "{listing}"
    );
    drop(pg);

    // Restore as root, then let the postgres OS user run restore_command.
    let target = s.path("restored");
    let r = hs(
        &s,
        &[
            "restore",
            "demo",
            "latest",
            "--target",
            target.to_str().unwrap(),
            "--repo",
            &url,
        ],
    )
    .ok();
    assert_eq!(r["recovery_configured"], true);
    s.share_with_postgres(true);
    let restored = PgCluster::start_existing(&target).expect("start restored cluster");
    restored
        .wait_for_promotion(Duration::from_secs(120))
        .expect("recovery finishes");
    let got = restored
        .psql("SELECT count(*) FROM pgbench_history")
        .unwrap();
    assert_eq!(
        got, committed,
        "restored cluster lost committed transactions"
    );
}
