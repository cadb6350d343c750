//! Backups and WAL taken from a hot standby (issue 17, part 1): a restore of them is an
//! independent cluster, not a second standby of the original primary. The standby is
//! made with `pg_basebackup -R`, so its data directory holds `standby.signal` and a
//! `primary_conninfo` with the replication password, both of which the backup copies.

use std::path::Path;
use std::time::Duration;

use hs_testkit::PgCluster;

use crate::support::{
    backup, cluster_with, hs, human, init_repo, lsn, restore, start_restored, wait_durable,
    wait_slot, Scratch, Streamer,
};

fn batch(pg: &PgCluster, n: u32) {
    pg.psql(&format!(
        "INSERT INTO marks SELECT {n} FROM generate_series(1, 10)"
    ))
    .unwrap();
}

/// Restores `latest` (with `extra` flags) into `dir`, checks that the standby
/// configuration was removed and the password is nowhere in the configuration, starts
/// it (it must promote: a copy still in standby mode never does) and returns its rows.
fn restore_independent(s: &Scratch, url: &str, dir: &str, extra: &[&str], secret: &str) -> String {
    let target = s.path(dir);
    let r = restore(s, "sb", "latest", &target, url, extra).ok();
    assert_eq!(r["recovery_configured"], true, "{r}");
    assert_eq!(r["standby_config_removed"]["standby_signal"], true, "{r}");
    assert_eq!(r["standby_config_removed"]["settings"], 1, "{r}");
    assert!(!target.join("standby.signal").exists());
    assert!(target.join("recovery.signal").is_file());
    let auto = std::fs::read_to_string(target.join("postgresql.auto.conf")).unwrap();
    assert!(
        !auto.contains(secret),
        "the replication password is still there:\n{auto}"
    );
    assert!(auto.contains("primary_conninfo = ''"), "{auto}");
    let restored = start_restored(&target);
    assert_eq!(restored.psql("SELECT pg_is_in_recovery()").unwrap(), "f");
    assert_standalone(&restored, target.as_path());
    restored
        .psql("SELECT string_agg(DISTINCT batch::text, ',' ORDER BY batch::text) || ' ' || count(*) FROM marks")
        .unwrap()
}

/// The restored server has no WAL receiver (it follows no one).
fn assert_standalone(restored: &PgCluster, dir: &Path) {
    let receivers = restored
        .psql("SELECT count(*) FROM pg_stat_wal_receiver")
        .unwrap();
    assert_eq!(receivers, "0", "{} streams from a server", dir.display());
}

/// A primary with batch 1, a standby of it, `wal stream` from the standby and one
/// backup taken from the standby (deployment `sb`).
struct FromStandby {
    primary: PgCluster,
    standby: PgCluster,
    s: Scratch,
    url: String,
    streamer: Streamer,
}

fn from_standby() -> FromStandby {
    let primary = cluster_with("CREATE TABLE marks (batch int NOT NULL)");
    batch(&primary, 1);
    let standby = primary.standby().expect("start a standby of the primary");
    assert!(standby.data_dir().join("standby.signal").is_file());
    let s = Scratch::new();
    let (url, conn) = init_repo(&s, &standby);
    let streamer = Streamer::start(&s, "sb", &conn, &url, &[]);
    wait_slot(&standby, "sb", Duration::from_secs(60));
    backup(&s, "sb", &conn, &url).ok();
    FromStandby {
        primary,
        standby,
        s,
        url,
        streamer,
    }
}

/// Completes the segment on `writer` (the primary, or the promoted standby) and waits
/// until the standby's streamer stored it.
fn archive_through_standby(writer: &PgCluster, standby: &PgCluster) {
    let end = lsn(&writer.psql("SELECT pg_current_wal_lsn()").unwrap());
    writer.psql("SELECT pg_switch_wal()").unwrap();
    wait_durable(standby, "sb", end, Duration::from_secs(60));
}

#[test]
fn backup_and_wal_from_a_standby_restore_as_an_independent_cluster() {
    let f = from_standby();
    let (primary, standby, s, url) = (&f.primary, &f.standby, &f.s, &f.url);
    let secret = standby.replication_password().to_string();
    batch(primary, 2);
    std::thread::sleep(Duration::from_millis(1500));
    let t_after_2 = primary
        .psql(r#"SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#)
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    batch(primary, 3);
    archive_through_standby(primary, standby);
    // doctor's header and JSON say the server is a standby.
    let conn = standby.replication_conninfo();
    let doc = hs(
        s,
        &["doctor", "sb", "--pg-connection", &conn, "--repo", url],
    )
    .ok();
    assert_eq!(doc["deployments"][0]["server"]["role"], "standby", "{doc}");
    let out = human(
        s,
        &["doctor", "sb", "--pg-connection", &conn, "--repo", url],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("sb — PG ") && text.lines().next().unwrap().contains(" — standby @ "),
        "{text}"
    );
    let (status, _) = f.streamer.stop();
    assert!(status.success(), "wal stream exit {status:?}");
    // The primary stays up: a copy that still followed it would connect and stream.
    s.share_with_postgres(true);

    assert_eq!(
        restore_independent(s, url, "latest", &[], &secret),
        "1,2,3 30"
    );
    assert_eq!(
        restore_independent(s, url, "to-time", &["--to", &t_after_2], &secret),
        "1,2 20"
    );
}

#[test]
fn wal_stream_from_a_standby_follows_its_promotion_without_a_gap() {
    let FromStandby {
        primary,
        standby,
        s,
        url,
        streamer,
    } = from_standby();
    batch(&primary, 2);
    archive_through_standby(&primary, &standby);

    // The primary goes away and the standby is promoted onto timeline 2; the stream
    // from it must go on there, and the rows written after the promotion be restorable.
    drop(primary);
    assert_eq!(standby.psql("SELECT pg_promote()").unwrap(), "t");
    standby
        .wait_for_promotion(Duration::from_secs(60))
        .expect("the standby promotes");
    batch(&standby, 3);
    archive_through_standby(&standby, &standby);
    let (status, log) = streamer.stop();
    assert!(status.success(), "wal stream exit {status:?}\n{log}");
    s.share_with_postgres(true);

    let target = s.path("after-promotion");
    let r = restore(&s, "sb", "latest", &target, &url, &[]).ok();
    assert_eq!(r["recovery_configured"], true, "{r}");
    let restored = start_restored(&target);
    assert_eq!(
        restored
            .psql("SELECT string_agg(DISTINCT batch::text, ',' ORDER BY batch::text) || ' ' || count(*) FROM marks")
            .unwrap(),
        "1,2,3 30"
    );
    // Batch 3 exists only on timeline 2: the restore replayed across the switch.
    let tli: u32 = restored
        .psql("SELECT timeline_id FROM pg_control_checkpoint()")
        .unwrap()
        .parse()
        .unwrap();
    assert!(tli >= 2, "restored onto timeline {tli}");
}
