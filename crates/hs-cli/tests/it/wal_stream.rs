//! `wal stream` under pgbench load, killed with SIGKILL and restarted repeatedly;
//! afterwards a restore replays every committed transaction through `wal fetch`.

use hs_testkit::{PgCluster, PgOptions};

use crate::support::{
    archive_current_wal, hs, init_and_backup, restore, start_restored, Scratch, Streamer,
};

#[test]
fn stream_survives_kill_9_and_restore_replays_every_commit() {
    let pg = PgCluster::start(PgOptions::default()).expect("start PostgreSQL");
    pg.pgbench(&["-i", "-s", "2"]).expect("pgbench -i");
    let s = Scratch::new();
    let (url, conn, _) = init_and_backup(&s, &pg, "demo");

    let pre = hs(&s, &["wal", "preflight", "demo", "--pg-connection", &conn]).ok();
    assert_eq!(pre["ready"], true, "{pre}");

    let mut guard = Streamer::start(&s, "demo", &conn, &url, &[]);
    let load = {
        let mut cmd = pg.client_command("pgbench");
        cmd.args(["-n", "-c", "2", "-j", "2", "-T", "8"]);
        std::thread::spawn(move || cmd.output().expect("pgbench run"))
    };
    // Kill the streamer with SIGKILL at different points while the load runs.
    for pause_ms in [700u64, 1300, 400, 1900] {
        std::thread::sleep(std::time::Duration::from_millis(pause_ms));
        guard.kill();
        guard = Streamer::start(&s, "demo", &conn, &url, &[]);
    }
    let out = load.join().expect("load thread");
    assert!(
        out.status.success(),
        "pgbench: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let committed = pg.psql("SELECT count(*) FROM pgbench_history").unwrap();
    assert!(committed.parse::<u64>().unwrap() > 0);
    // Complete the segment holding the last commit, so it is committed as a full segment.
    archive_current_wal(&pg, "demo");

    // SIGTERM: a clean stop with a JSON summary.
    let (status, stdout) = guard.stop();
    assert!(status.success(), "wal stream exit {status:?}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("wal stream JSON");
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
    let r = restore(&s, "demo", "latest", &target, &url, &[]).ok();
    assert_eq!(r["recovery_configured"], true);
    s.share_with_postgres(true);
    let restored = start_restored(&target);
    let got = restored
        .psql("SELECT count(*) FROM pgbench_history")
        .unwrap();
    assert_eq!(
        got, committed,
        "restored cluster lost committed transactions"
    );
}
