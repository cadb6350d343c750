//! Tablespaces: a backup of a cluster with a tablespace restores with
//! `--tablespace-mapping` into the new directory (the pg_tblspc link points there
//! and the table reads back); without a mapping an occupied original location is
//! refused with exit 7 before anything is written.

use std::os::unix::fs::PermissionsExt;

use hs_testkit::PgCluster;

use crate::support::{cluster_with, init_and_backup, restore, Scratch};

const SUM_SQL: &str = "SELECT count(*), sum(n), md5(string_agg(s, ',' ORDER BY n)) FROM in_ts";

#[test]
fn tablespace_restores_with_mapping_and_refuses_an_occupied_location() {
    let s = Scratch::new();
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ts_orig = s.path("ts_orig");
    std::fs::create_dir(&ts_orig).unwrap();
    hs_testkit::chown_to_postgres(&ts_orig).unwrap();

    let pg = cluster_with(&format!(
        "CREATE TABLESPACE ts LOCATION '{}'",
        ts_orig.display()
    ));
    pg.psql(
        "CREATE TABLE in_ts (n int, s text) TABLESPACE ts;
         INSERT INTO in_ts SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
         CHECKPOINT;",
    )
    .expect("load data");
    let expected = pg.psql(SUM_SQL).unwrap();
    let oid = pg
        .psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts'")
        .unwrap();

    let (url, _, _) = init_and_backup(&s, &pg, "demo");
    let orig = ts_orig.to_str().unwrap();

    // No mapping: the original location holds the running cluster's tablespace.
    let occupied = s.path("restore_occupied");
    let r = restore(&s, "demo", "latest", &occupied, &url, &[]);
    assert_eq!(r.status, 7, "{}", r.stdout);
    assert_eq!(r.err_code(), "conflict.tablespace_not_empty");
    assert!(!occupied.exists(), "nothing is written before the refusal");

    // A mapping for a directory no tablespace used is a usage error.
    let r = restore(
        &s,
        "demo",
        "latest",
        &occupied,
        &url,
        &["--tablespace-mapping", "/no/such/ts=/tmp/x"],
    );
    assert_eq!(r.status, 2, "{}", r.stdout);
    assert_eq!(r.err_code(), "usage.tablespace_mapping_unmatched");

    let target = s.path("restored");
    let ts_new = s.path("ts_new");
    let mapping = format!("{orig}={}", ts_new.display());
    let r = restore(
        &s,
        "demo",
        "latest",
        &target,
        &url,
        &["--tablespace-mapping", &mapping],
    )
    .ok();
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(
        r["tablespaces"][0]["oid"].as_u64().unwrap().to_string(),
        oid
    );
    assert_eq!(
        r["tablespaces"][0]["directory"].as_str().unwrap(),
        ts_new.to_str().unwrap()
    );
    let link = std::fs::read_link(target.join("pg_tblspc").join(&oid)).unwrap();
    assert_eq!(link, ts_new);
    assert!(std::fs::read_dir(&ts_new)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("PG_")));

    drop(pg);
    hs_testkit::chown_to_postgres(&ts_new).unwrap();
    let restored = PgCluster::start_existing(&target).expect("start restored cluster");
    assert_eq!(restored.psql(SUM_SQL).unwrap(), expected);
    assert_eq!(
        restored
            .psql("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts'")
            .unwrap(),
        ts_new.to_str().unwrap()
    );
}
