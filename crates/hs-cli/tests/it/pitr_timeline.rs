//! Restore planning across a timeline switch: a backup on timeline 1, rows
//! streamed; the backup is restored and promoted (timeline 2), the streamer
//! follows the promoted server under the same deployment and more rows land
//! on timeline 2. `restore --to-latest` then plans across the switch (WAL
//! ends on timeline 2) and restores the timeline-2 rows; `--to` a time on
//! timeline 2 stops there; `--to-timeline current` stays on timeline 1 and
//! an unknown timeline is refused up front.

use std::time::Duration;

use hs_testkit::PgCluster;

use crate::support::{
    archive_current_wal, cluster_with, init_and_backup, restore, start_restored, wait_slot, Run,
    Scratch, Streamer,
};

const DEP: &str = "tli";

/// Waits until the streamer made everything up to the primary's current LSN durable,
/// then stops it.
fn drain_and_stop(pg: &PgCluster, streamer: Streamer) {
    archive_current_wal(pg, DEP);
    let (status, _) = streamer.stop();
    assert!(status.success(), "wal stream exit {status:?}");
}

fn batch(pg: &PgCluster, n: u32) {
    pg.psql(&format!(
        "INSERT INTO marks SELECT {n}, 'batch{n}-' || g FROM generate_series(1, 25) g"
    ))
    .unwrap();
}

fn restore_to(s: &Scratch, url: &str, dir: &str, extra: &[&str]) -> Run {
    restore(s, DEP, "latest", &s.path(dir), url, extra)
}

/// Restores, starts and waits for promotion; returns the running cluster.
fn restore_start(s: &Scratch, url: &str, dir: &str, extra: &[&str]) -> PgCluster {
    let r = restore_to(s, url, dir, extra).ok();
    assert_eq!(r["recovery_configured"], true, "{r}");
    start_restored(&s.path(dir))
}

fn batches(c: &PgCluster) -> String {
    c.psql("SELECT string_agg(DISTINCT batch::text, ',' ORDER BY batch::text) || ' ' || count(*) FROM marks")
        .unwrap()
}

#[test]
fn restore_plans_and_replays_across_a_timeline_switch() {
    let pg = cluster_with("CREATE TABLE marks (batch int NOT NULL, marker text NOT NULL)");
    let s = Scratch::new();
    let (url, conn, _) = init_and_backup(&s, &pg, DEP);

    // Timeline 1: batches 1 and 2 archived, then the original server is gone.
    let streamer = Streamer::start(&s, DEP, &conn, &url, &[]);
    wait_slot(&pg, DEP, Duration::from_secs(60));
    batch(&pg, 1);
    batch(&pg, 2);
    drain_and_stop(&pg, streamer);
    drop(pg);
    s.share_with_postgres(true);

    // Restore to the end of timeline 1 and promote: timeline 2.
    let a = restore_start(&s, &url, "tl2", &["--to-latest"]);
    assert_eq!(batches(&a), "1,2 50");
    let tli = a
        .psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")
        .unwrap();
    assert_eq!(tli, "00000002", "the promoted copy is on timeline 2");

    // Follow the promoted server under the same deployment.
    let streamer = Streamer::start(&s, DEP, &a.replication_conninfo(), &url, &[]);
    wait_slot(&a, DEP, Duration::from_secs(60));
    batch(&a, 3);
    std::thread::sleep(Duration::from_millis(1500));
    let t_after_3 = a
        .psql(r#"SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#)
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    batch(&a, 4);
    drain_and_stop(&a, streamer);
    drop(a);
    let listing = std::fs::read_dir(s.repo_dir().join(format!("deployments/{DEP}/wal")))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    s.share_with_postgres(true);

    // The preview plans across the switch: the WAL ends on timeline 2.
    let p = restore_to(&s, &url, "never", &["--to-latest", "--preview"]).ok();
    let plan = &p["plan"];
    assert_eq!(plan["timeline"], 2, "{p}\nwal dir: {listing:?}");
    assert_eq!(plan["backup"]["timeline"], 1, "{p}");
    let from = plan["wal"]["from"].as_str().expect("a WAL range");
    let to = plan["wal"]["to"].as_str().expect("a WAL range");
    assert!(from.starts_with("00000001"), "{p}");
    assert!(to.starts_with("00000002"), "{p}");
    assert!(
        plan["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap_or("").contains("to timeline 2")),
        "{p}"
    );
    // `current` stays on the backup's timeline.
    let p = restore_to(
        &s,
        &url,
        "never",
        &["--to-latest", "--to-timeline", "current", "--preview"],
    )
    .ok();
    assert_eq!(p["plan"]["timeline"], 1, "{p}");
    assert!(
        p["plan"]["wal"]["to"]
            .as_str()
            .unwrap_or("")
            .starts_with("00000001"),
        "{p}"
    );
    // A timeline with no archived history is refused before anything is written.
    let r = restore_to(&s, &url, "never", &["--to-latest", "--to-timeline", "3"]);
    assert_eq!(r.status, 7, "{}", r.stdout);
    assert_eq!(r.err_code(), "conflict.timeline_not_reachable");
    assert!(!s.path("never").exists());

    // A real restore to latest replays timeline 2.
    let b = restore_start(&s, &url, "latest2", &["--to-latest"]);
    assert_eq!(batches(&b), "1,2,3,4 100");
    drop(b);

    // A time on timeline 2: the plan's scan follows the path there.
    let c = restore_start(&s, &url, "time2", &["--to", &t_after_3]);
    assert_eq!(batches(&c), "1,2,3 75", "restore to {t_after_3}");
}
