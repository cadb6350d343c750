//! Point-in-time restore end to end: one cluster, one backup, `wal stream`
//! archiving five batches of rows; restores to a timestamp, to "N seconds
//! ago", to an LSN and to a restore point each hold exactly the rows
//! committed before the target; a target past the archived WAL fails up front.

use std::time::{Duration, SystemTime};

use hs_testkit::PgCluster;

use crate::support::{
    archive_current_wal, cluster_with, human, init_and_backup, restore, restore_args,
    start_restored, wait_slot, Scratch, Streamer,
};

fn batch(pg: &PgCluster, n: u32) {
    pg.psql(&format!(
        "INSERT INTO marks SELECT {n}, 'batch{n}-' || g FROM generate_series(1, 25) g"
    ))
    .unwrap();
}

/// Restores with `extra` target flags into a fresh directory, starts it and
/// returns the batches it holds ("1,2,3").
fn restore_and_read(
    s: &Scratch,
    url: &str,
    dir: &str,
    extra: &[&str],
) -> (String, serde_json::Value) {
    let target = s.path(dir);
    let r = restore(s, "pitr", "latest", &target, url, extra).ok();
    assert_eq!(r["recovery_configured"], true, "{r}");
    let restored = start_restored(&target);
    let got = restored
        .psql("SELECT string_agg(DISTINCT batch::text, ',' ORDER BY batch::text) || ' ' || count(*) FROM marks")
        .unwrap();
    (got, r)
}

#[test]
fn restore_to_time_ago_lsn_and_restore_point() {
    let pg = cluster_with("CREATE TABLE marks (batch int NOT NULL, marker text NOT NULL)");
    let s = Scratch::new();
    let (url, conn, _) = init_and_backup(&s, &pg, "pitr");

    let streamer = Streamer::start(&s, "pitr", &conn, &url, &[]);
    wait_slot(&pg, "pitr", Duration::from_secs(60));

    let step = Duration::from_millis(1500);
    batch(&pg, 1);
    std::thread::sleep(step);
    let t_after_1 = pg
        .psql(r#"SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#)
        .unwrap();
    std::thread::sleep(step);
    batch(&pg, 2);
    pg.psql("SELECT pg_create_restore_point('before_batch3')")
        .unwrap();
    batch(&pg, 3);
    let lsn_after_3 = pg.psql("SELECT pg_current_wal_lsn()").unwrap();
    batch(&pg, 4);
    std::thread::sleep(Duration::from_secs(1));
    let between_4_and_5 = SystemTime::now();
    std::thread::sleep(Duration::from_secs(2));
    batch(&pg, 5);

    archive_current_wal(&pg, "pitr");
    let (status, _) = streamer.stop();
    assert!(status.success(), "wal stream exit {status:?}");
    drop(pg);

    // A target past the archived WAL fails before anything is written.
    let never = s.path("never");
    // A restore into `never` that must fail before writing anything.
    let restore_never = |flags: &[&str]| restore(&s, "pitr", "latest", &never, &url, flags);
    let r = restore_never(&["--to", "now"]);
    assert_eq!(r.status, 7, "{}", r.stdout);
    assert_eq!(r.err_code(), "conflict.target_unreachable");
    assert!(!never.exists(), "the failed restore wrote its target");
    let r = restore_never(&["--to-lsn", "FF/0"]);
    assert_eq!(r.err_code(), "conflict.target_unreachable");
    let r = restore_never(&["--to-name", "no_such_point"]);
    assert_eq!(r.err_code(), "conflict.target_unreachable");
    let r = restore_never(&["--to", "2001-01-01 00:00"]);
    assert_eq!(r.status, 7);
    assert_eq!(r.err_code(), "conflict.target_before_backup");
    let r = restore_never(&["--to", "next tuesday"]);
    assert_eq!(r.status, 2);
    assert_eq!(r.err_code(), "usage.target_time_invalid");
    assert!(!never.exists());

    // --preview prints the plan and writes nothing.
    let p = restore_never(&["--to-name", "before_batch3", "--preview"]).ok();
    assert_eq!(p["preview"], true);
    assert_eq!(p["plan"]["target"]["kind"], "name", "{p}");
    assert!(p["plan"]["target"]["lsn"].is_string(), "{p}");
    assert!(p["plan"]["wal"]["from"].is_string(), "{p}");
    assert!(p["plan"]["backup"]["backup_id"].is_string(), "{p}");
    assert!(!never.exists());
    // The human preview prints the resolved UTC time and the WAL range.
    let human = human(
        &s,
        &restore_args(
            "pitr",
            "latest",
            &never,
            &url,
            &["--to", &t_after_1, "--preview"],
        ),
    );
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(human.status.success(), "{text}");
    assert!(
        text.contains("Restore plan (nothing written)")
            && text.contains(&format!("(UTC, from {t_after_1:?})"))
            && text.contains("WAL:"),
        "{text}"
    );
    println!("{text}");
    assert!(!never.exists());
    // Planning left summaries of the segments it decoded for the next plan.
    let summaries = s.repo_dir().join("deployments/pitr/wal/summaries");
    assert!(
        std::fs::read_dir(&summaries).is_ok_and(|mut d| d.next().is_some()),
        "no segment summaries in {}",
        summaries.display()
    );

    // The restored clusters run restore_command as the postgres OS user.
    s.share_with_postgres(true);

    let (got, r) = restore_and_read(&s, &url, "to_time", &["--to", &t_after_1]);
    assert_eq!(got, "1 25", "restore to {t_after_1}");
    assert_eq!(r["plan"]["target"]["kind"], "time");

    let (got, _) = restore_and_read(&s, &url, "to_name", &["--to-name", "before_batch3"]);
    assert_eq!(got, "1,2 50", "restore to restore point before_batch3");

    let (got, _) = restore_and_read(&s, &url, "to_lsn", &["--to-lsn", &lsn_after_3]);
    assert_eq!(got, "1,2,3 75", "restore to LSN {lsn_after_3}");

    // Last, so that "N seconds ago" is computed right before the restore.
    let ago = SystemTime::now()
        .duration_since(between_4_and_5)
        .unwrap()
        .as_secs();
    let ago = format!("{ago} seconds ago");
    let (got, r) = restore_and_read(&s, &url, "to_ago", &["--to", &ago]);
    assert_eq!(got, "1,2,3,4 100", "restore to {ago:?}: {r}");
}
