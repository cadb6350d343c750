//! Backup then restore through the real binary on object-store repositories served
//! on 127.0.0.1: moto (s3://), fake-gcs-server (gcs://) and Azurite (azblob://).

use hs_testkit::{skip_or_fail, Bucket, PgCluster, StorageKind, StorageServer};

use crate::support::{cluster_with, json_command, restore_args, Run, Scratch};

const CHECK: &str =
    "SELECT count(*), sum(length(payload)), md5(string_agg(payload, ',' ORDER BY id)) FROM t";

/// Runs `pg_hardstorage -o json` with the scratch keyring and the bucket's client
/// environment (test credentials) added.
fn hs_env(s: &Scratch, bucket: &Bucket, args: &[&str]) -> Run {
    Run::of(
        json_command(args, &s.keyring())
            .envs(bucket.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    )
}

fn round_trip(kind: StorageKind) {
    let test = format!("{}_backup_restore_round_trip", kind.name());
    let Some(server) = skip_or_fail(StorageServer::start(kind), &test) else {
        return;
    };
    let bucket = server.bucket("roundtrip").expect("create bucket");
    let pg = cluster_with(
        "CREATE TABLE t (id int primary key, payload text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 50000) g;
         CHECKPOINT;",
    );
    let expected = pg.psql(CHECK).expect("checksum");

    let s = Scratch::new();
    let url = bucket.url.clone();
    let init = hs_env(&s, &bucket, &["repo", "init", &url]).ok();
    // moto and Azurite honour conditional writes; fake-gcs-server ignores them on
    // resumable uploads, and `repo init` says so.
    let warnings = init["warnings"].as_array().cloned().unwrap_or_default();
    if kind == StorageKind::Gcs {
        assert_eq!(warnings.len(), 1, "{init}");
        assert!(warnings[0]
            .as_str()
            .unwrap_or("")
            .contains("conditional writes"));
    } else {
        assert!(warnings.is_empty(), "{init}");
    }
    let again = hs_env(&s, &bucket, &["repo", "init", &url]);
    assert_eq!(again.status, 7, "{}", again.stdout);
    assert_eq!(again.err_code(), "conflict.repo_exists");

    let conn = pg.replication_conninfo();
    let b = hs_env(
        &s,
        &bucket,
        &["backup", "demo", "--pg-connection", &conn, "--repo", &url],
    )
    .ok();
    let id = b["backup_id"].as_str().expect("backup id").to_owned();
    assert!(b["logical_bytes"].as_u64().unwrap_or(0) > 1 << 20, "{b}");

    let list = hs_env(&s, &bucket, &["list", "demo", "--repo", &url]).ok();
    assert_eq!(list["backups"].as_array().map(Vec::len), Some(1));

    let target = s.path("restored");
    let r = hs_env(&s, &bucket, &restore_args("demo", &id, &target, &url, &[])).ok();
    assert_eq!(r["verified"], true, "{r}");

    // Without credentials the store answers with a coded error, not a panic.
    if kind == StorageKind::Azblob {
        let mut wrong = bucket.clone();
        wrong.env = vec![(
            "AZURE_STORAGE_KEY".into(),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
        )];
        let denied = hs_env(&s, &wrong, &["list", "demo", "--repo", &url]);
        assert_eq!(denied.status, 3, "{}", denied.stdout);
        assert_eq!(denied.err_code(), "auth.storage_denied");
    }

    drop(pg);
    let restored = PgCluster::start_existing(&target).expect("start restored cluster");
    assert_eq!(restored.psql(CHECK).expect("query restored"), expected);
}

#[test]
fn s3_backup_restore_round_trip() {
    round_trip(StorageKind::S3);
}

#[test]
fn gcs_backup_restore_round_trip() {
    round_trip(StorageKind::Gcs);
}

#[test]
fn azblob_backup_restore_round_trip() {
    round_trip(StorageKind::Azblob);
}

#[test]
fn unreachable_store_exits_8() {
    let s = Scratch::new();
    let port = hs_testkit::free_port().unwrap();
    let bucket = Bucket {
        url: format!("s3://nobucket/repo?region=us-east-1&endpoint=http://127.0.0.1:{port}"),
        env: vec![
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        ],
    };
    let r = hs_env(&s, &bucket, &["repo", "init", &bucket.url]);
    assert_eq!(r.status, 8, "{}", r.stdout);
    assert_eq!(r.err_code(), "unreachable.storage");
}
