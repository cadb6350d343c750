//! `list` as an inventory (issue 19): start and stop time, duration, the WAL range as
//! LSNs and segment names (for the deployment's real segment size), bytes read, sent and
//! stored, and a dedup figure with a meaning (the share of chunks that added nothing new), in
//! human form and as numbers in `-o json`; `backup`, `restore` and `repo init` say how
//! long they took and how fast.

use std::time::Duration;

use hs_testkit::{PgCluster, PgOptions};

use crate::support::{
    archive_current_wal, backup, hs, human, restore, wait_slot, Scratch, Streamer,
};

/// The segment PostgreSQL names for `lsn` (`pg_walfile_name_offset`, i.e. `XLByteToSeg`,
/// as `backup_label` does).
fn walfile(pg: &PgCluster, lsn: &str) -> String {
    pg.psql(&format!(
        "SELECT file_name FROM pg_walfile_name_offset('{lsn}')"
    ))
    .expect("pg_walfile_name_offset")
}

#[test]
fn list_shows_times_wal_range_sizes_and_reused_share() {
    // 1 MiB segments: the segment names prove the size was read from the stored WAL.
    let pg = PgCluster::start(PgOptions {
        initdb_args: vec!["--wal-segsize=1".to_owned()],
        ..PgOptions::default()
    })
    .expect("start PostgreSQL");
    pg.psql(
        "CREATE TABLE t (id int primary key, payload text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 100000) g;
         CHECKPOINT;",
    )
    .unwrap();
    let s = Scratch::new();
    let url = s.repo_url();
    let init = hs(&s, &["repo", "init", &url]).ok();
    assert!(init["seconds"].as_f64().unwrap() >= 0.0, "{init}");
    let conn = pg.replication_conninfo();
    let streamer = Streamer::start(&s, "demo", &conn, &url, &[]);
    wait_slot(&pg, "demo", Duration::from_secs(60));

    let first = backup(&s, "demo", &conn, &url).ok();
    assert!(first["bytes_per_second"].as_u64().unwrap() > 0, "{first}");
    // A first backup reuses only the chunks repeated within it (zero pages and the like).
    let p = first["reused_percent"].as_f64().unwrap();
    assert!(p < 90.0, "{first}");
    std::thread::sleep(Duration::from_millis(1100));
    // A second backup of the unchanged cluster: almost every chunk is already stored.
    let second = backup(&s, "demo", &conn, &url).ok();
    archive_current_wal(&pg, "demo");

    let list = hs(&s, &["list", "demo", "--repo", &url]).ok();
    let rows = list["backups"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{list}");
    for (row, taken) in rows.iter().zip([&first, &second]) {
        assert_eq!(row["backup_id"], taken["backup_id"]);
        assert_eq!(row["wal_segment_size"], 1 << 20, "{row}");
        let (start, stop) = (
            row["start_lsn"].as_str().unwrap(),
            row["stop_lsn"].as_str().unwrap(),
        );
        assert_eq!(row["start_segment"], walfile(&pg, start), "{row}");
        assert_eq!(row["stop_segment"], walfile(&pg, stop), "{row}");
        assert!(
            row["start_time"].as_str() <= row["stop_time"].as_str(),
            "{row}"
        );
        // The manifest's times are whole seconds; so is the duration taken from them.
        let secs = row["duration_seconds"].as_f64().unwrap();
        assert!((0.0..600.0).contains(&secs), "{row}");
        assert_eq!(row["logical_bytes"], taken["logical_bytes"]);
        assert_eq!(row["stored_bytes"], taken["stored_bytes"]);
        assert!(row["chunks"].as_u64().unwrap() >= row["new_chunks"].as_u64().unwrap());
        assert_eq!(row["reused_percent"], taken["reused_percent"]);
    }
    let reused = rows[1]["reused_percent"].as_f64().unwrap();
    assert!(reused > 90.0 && reused <= 100.0, "{}", rows[1]);

    let out = human(&s, &["list", "demo", "--repo", &url]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for col in ["STARTED", "DURATION", "READ", "SENT", "STORED", "REUSED"] {
        assert!(text.lines().next().unwrap().contains(col), "{text}");
    }
    let (seg, stop) = (
        rows[1]["stop_segment"].as_str().unwrap(),
        rows[1]["stop_time"].as_str().unwrap(),
    );
    assert!(
        text.contains(seg) && text.contains(&format!("stopped {stop}")),
        "{text}"
    );
    assert!(text.contains(&format!("{reused:.1}%")), "{text}");
    assert!(
        !text.contains("x\n"),
        "no read/stored ratio any more: {text}"
    );
    assert!(text.contains("REUSED: share of its chunks that"), "{text}");

    // restore: duration and throughput.
    streamer.stop();
    let id = rows[1]["backup_id"].as_str().unwrap();
    let r = restore(&s, "demo", id, &s.path("r"), &url, &["--verify=skip"]).ok();
    assert!(r["bytes_per_second"].as_u64().unwrap() > 0, "{r}");
    let out = human(
        &s,
        &[
            "restore",
            "demo",
            id,
            "--target",
            s.path("r2").to_str().unwrap(),
            "--repo",
            &url,
            "--verify=skip",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("/s,"), "throughput in the summary: {text}");
}
