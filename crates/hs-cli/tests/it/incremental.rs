//! PostgreSQL 17+ incremental backups without chains (issue 17, part 3): with
//! `summarize_wal = on` a backup asks only for the blocks changed since the newest
//! backup, yet each backup restores on its own and passes pg_verifybackup against a
//! manifest of the full files. On PostgreSQL 15 and 16 every backup is a full one.

use std::time::Duration;

use hs_testkit::PgCluster;
use serde_json::Value;

use crate::support::{backup, cluster_with, hs, init_repo, restore, start_restored, Scratch};

/// Every table's rows, as one line per table.
const CONTENT: &str = "SELECT 't ' || count(*) || ' ' || md5(string_agg(t::text, ',' ORDER BY id)) FROM t
    UNION ALL SELECT 'w ' || count(*) || ' ' || md5(string_agg(w::text, ',' ORDER BY id)) FROM w
    UNION ALL SELECT 'n ' || count(*) || ' ' || coalesce(md5(string_agg(n::text, ',' ORDER BY id)), '') FROM n";

fn content(pg: &PgCluster) -> String {
    pg.psql(CONTENT).expect("content query")
}

/// Restores `id` into `dir`, checks pg_verifybackup passed, starts it and returns its content.
fn restored_content(s: &Scratch, url: &str, id: &str, dir: &str) -> String {
    let target = s.path(dir);
    let r = restore(s, "inc", id, &target, url, &[]).ok();
    assert_eq!(r["verified"], true, "{r}");
    let label = std::fs::read_to_string(target.join("backup_label")).unwrap_or_default();
    assert!(!label.contains("INCREMENTAL"), "{label}");
    let restored = start_restored(&target);
    let got = content(&restored);
    drop(restored);
    got
}

fn summarize_wal_on(pg: &PgCluster) {
    pg.psql("ALTER SYSTEM SET summarize_wal = on").unwrap();
    pg.psql("SELECT pg_reload_conf()").unwrap();
}

fn kind(b: &Value) -> (Option<&str>, u64) {
    (
        b["incremental_from"].as_str(),
        b["incremental_files"].as_u64().unwrap_or(0),
    )
}

#[test]
fn incremental_backups_restore_on_their_own() {
    let pg = cluster_with(
        "CREATE TABLE t (id int primary key, v text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 200000) g;
         CREATE TABLE w (id int primary key, v text);
         INSERT INTO w SELECT g, repeat('w', 200) FROM generate_series(1, 20000) g;
         CREATE TABLE u (id int);
         INSERT INTO u SELECT generate_series(1, 10000);
         CREATE TABLE n (id int primary key, v text);
         CHECKPOINT;",
    );
    let major = pg.major().expect("server major");
    if major >= 17 {
        summarize_wal_on(&pg);
    }
    let s = Scratch::new();
    let (url, conn) = init_repo(&s, &pg);
    let first = backup(&s, "inc", &conn, &url).ok();
    assert_eq!(kind(&first), (None, 0), "{first}");
    let first_id = first["backup_id"].as_str().unwrap().to_owned();

    // A contiguous 1% of t changes, t grows, w shrinks (VACUUM truncates its file), u
    // goes, n is new.
    pg.psql(
        "UPDATE t SET v = v || 'x' WHERE id <= 2000;
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(200001, 210000) g;
         DELETE FROM w WHERE id > 5000;
         DROP TABLE u;
         INSERT INTO n SELECT g, 'new' FROM generate_series(1, 1000) g;",
    )
    .unwrap();
    pg.psql("VACUUM w").unwrap();
    let after_second = content(&pg);
    let t_bytes: u64 = pg
        .psql("SELECT pg_total_relation_size('t')")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let second = backup(&s, "inc", &conn, &url).ok();
    let second_id = second["backup_id"].as_str().unwrap().to_owned();
    let (sent, size) = (
        second["sent_bytes"].as_u64().unwrap(),
        second["logical_bytes"].as_u64().unwrap(),
    );
    if major < 17 {
        assert_eq!(kind(&second), (None, 0), "{second}");
        assert_eq!(sent, size, "{second}");
        assert_eq!(restored_content(&s, &url, "latest", "r-full"), after_second);
        return;
    }
    let (from, files) = kind(&second);
    assert_eq!(from, Some(first_id.as_str()), "{second}");
    assert!(files > 0, "{second}");
    // The WAL segments the backup includes (16 MiB each) are sent whole either way;
    // the relation files of t (1% changed, 5% added) must mostly not be.
    let first_sent = first["sent_bytes"].as_u64().unwrap();
    assert!(
        first_sent > sent + t_bytes / 2,
        "the server sent {sent} of {size} bytes for a small change (full: {first_sent}; t: {t_bytes})"
    );

    // A chain: the next one uploads the second's manifest, which we wrote.
    pg.psql("UPDATE t SET v = v || 'y' WHERE id BETWEEN 100000 AND 101000;")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let third = backup(&s, "inc", &conn, &url).ok();
    assert_eq!(kind(&third).0, Some(second_id.as_str()), "{third}");
    let third_id = third["backup_id"].as_str().unwrap().to_owned();
    let after_third = content(&pg);

    // --full forces a full one, taken at the same state.
    std::thread::sleep(Duration::from_millis(1100));
    let full = hs(
        &s,
        &[
            "backup",
            "inc",
            "--pg-connection",
            &conn,
            "--repo",
            &url,
            "--full",
        ],
    )
    .ok();
    assert_eq!(kind(&full), (None, 0), "{full}");
    assert_eq!(full["sent_bytes"], full["logical_bytes"], "{full}");
    let full_id = full["backup_id"].as_str().unwrap().to_owned();

    // `list` says which is which; `verify` checks the incremental ones like any other.
    let list = hs(&s, &["list", "inc", "--repo", &url]).ok();
    let types: Vec<&str> = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["full", "incremental", "incremental", "full"],
        "{list}"
    );
    for id in [&second_id, &third_id] {
        let v = hs(&s, &["verify", "inc", id, "--repo", &url]).ok();
        assert_eq!(v["ok"], true, "{v}");
    }

    // Each restores on its own (no chain, no pg_combinebackup), to the rows it saw;
    // the incremental third and the full fourth restore to the same content.
    drop(pg);
    assert_eq!(
        restored_content(&s, &url, &second_id, "r-second"),
        after_second
    );
    let third_rows = restored_content(&s, &url, &third_id, "r-third");
    assert_eq!(third_rows, after_third);
    assert_eq!(restored_content(&s, &url, &full_id, "r-full"), third_rows);
}

#[test]
fn incremental_falls_back_to_full_with_a_reason() {
    let pg = cluster_with(
        "CREATE TABLE t (id int primary key);
         INSERT INTO t SELECT generate_series(1, 1000);
         CHECKPOINT;",
    );
    if pg.major().expect("server major") < 17 {
        return;
    }
    let s = Scratch::new();
    let (url, conn) = init_repo(&s, &pg);
    // summarize_wal is off (the default): full, and the log says why.
    backup(&s, "fb", &conn, &url).ok();
    std::thread::sleep(Duration::from_millis(1100));
    let second = backup(&s, "fb", &conn, &url);
    let v = second.ok();
    assert!(v["incremental_from"].is_null(), "{v}");
    assert!(
        second.stderr.contains("summarize_wal is off"),
        "{}",
        second.stderr
    );
    // Turned on after a later checkpoint, the summaries start there and do not reach
    // back to the previous backup: the server refuses the incremental backup and a
    // full one is taken instead.
    pg.psql("INSERT INTO t SELECT generate_series(1001, 2000)")
        .unwrap();
    pg.psql("CHECKPOINT").unwrap();
    summarize_wal_on(&pg);
    std::thread::sleep(Duration::from_millis(1100));
    let third = backup(&s, "fb", &conn, &url);
    let v = third.ok();
    assert!(v["incremental_from"].is_null(), "{v}");
    assert!(
        third.stderr.contains("the server refused"),
        "{}",
        third.stderr
    );
    // The next one has summaries from the third on: incremental.
    pg.psql("INSERT INTO t SELECT generate_series(2001, 3000);")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let fourth = backup(&s, "fb", &conn, &url).ok();
    assert!(fourth["incremental_from"].is_string(), "{fourth}");
}

/// A table in a tablespace: its incremental members come in the tablespace's archive
/// and its manifest paths are under `pg_tblspc/<oid>/`; the restore (with a mapping)
/// passes pg_verifybackup and reads the rows.
#[test]
fn incremental_backup_of_a_tablespace_restores() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ts = s.path("ts");
    std::fs::create_dir(&ts).unwrap();
    hs_testkit::chown_to_postgres(&ts).unwrap();
    let pg = cluster_with(&format!("CREATE TABLESPACE ts LOCATION '{}'", ts.display()));
    if pg.major().expect("server major") < 17 {
        return;
    }
    summarize_wal_on(&pg);
    pg.psql(
        "CREATE TABLE in_ts (id int primary key, v text) TABLESPACE ts;
         INSERT INTO in_ts SELECT g, md5(g::text) FROM generate_series(1, 100000) g;
         CHECKPOINT;",
    )
    .unwrap();
    let (url, conn) = init_repo(&s, &pg);
    backup(&s, "ts", &conn, &url).ok();
    pg.psql("UPDATE in_ts SET v = v || 'z' WHERE id <= 1000")
        .unwrap();
    let sql = "SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM in_ts";
    let expected = pg.psql(sql).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let second = backup(&s, "ts", &conn, &url).ok();
    assert!(second["incremental_from"].is_string(), "{second}");
    assert!(
        second["incremental_files"].as_u64().unwrap() > 0,
        "{second}"
    );
    drop(pg);
    let target = s.path("restored");
    let mapping = format!("{}={}", ts.display(), s.path("ts_new").display());
    let r = restore(
        &s,
        "ts",
        "latest",
        &target,
        &url,
        &["--tablespace-mapping", &mapping],
    )
    .ok();
    assert_eq!(r["verified"], true, "{r}");
    hs_testkit::chown_to_postgres(&s.path("ts_new")).unwrap();
    let restored = start_restored(&target);
    assert_eq!(restored.psql(sql).unwrap(), expected);
}
