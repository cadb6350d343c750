//! `wal list` after a failover: the streamer follows a standby that is promoted, so
//! the repository holds a `.partial` on timeline 1 (where that timeline ended) and one
//! on timeline 2; only timeline 2's is "(in progress)".

use std::time::Duration;

use crate::support::{cluster_with, human, init_repo, wait_streaming, Scratch, Streamer};

#[test]
fn after_a_failover_only_the_newest_timelines_partial_is_in_progress() {
    let pg = cluster_with("CREATE TABLE t (x int)");
    let standby = pg.standby().expect("standby");
    let s = Scratch::new();
    let (url, _) = init_repo(&s, &pg);
    let conn = standby.replication_conninfo();
    let streamer = Streamer::start(&s, "fo", &conn, &url, &[]);
    wait_streaming(&standby, "fo", Duration::from_secs(60));
    pg.psql("INSERT INTO t SELECT generate_series(1, 1000)")
        .unwrap();
    // The streamer writes its .partial every second on file://.
    std::thread::sleep(Duration::from_secs(3));
    standby.psql("SELECT pg_promote()").unwrap();
    standby
        .wait_for_promotion(Duration::from_secs(60))
        .expect("promotion");
    standby
        .psql("INSERT INTO t SELECT generate_series(1, 1000)")
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let listing = loop {
        std::thread::sleep(Duration::from_secs(1));
        let l = crate::support::hs(&s, &["wal", "list", "fo", "--repo", &url]).ok();
        let timelines: Vec<u64> = l["partial_states"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["timeline"].as_u64().unwrap())
            .collect();
        if timelines.contains(&1) && timelines.contains(&2) {
            break l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no partials on timelines 1 and 2: {l}"
        );
    };
    let (status, _) = streamer.stop();
    assert!(status.success(), "wal stream exit {status:?}");
    for p in listing["partial_states"].as_array().unwrap() {
        match p["timeline"].as_u64() {
            Some(1) => {
                assert_eq!(p["state"], "timeline_ended", "{listing}");
                assert_eq!(p["next_timeline"], 2, "{listing}");
            }
            _ => assert_eq!(p["state"], "in_progress", "{listing}"),
        }
    }
    let out = human(&s, &["wal", "list", "fo", "--repo", &url]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("(in progress)").count(), 1, "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("partial: 00000001")
            && l.contains("end of its timeline, WAL continues on timeline 2")),
        "{text}"
    );
}
