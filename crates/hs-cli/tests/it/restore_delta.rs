//! `restore --delta`: a restored directory that was then damaged (files modified,
//! deleted, added) is brought to a later backup's state by rewriting only what
//! differs; the result passes pg_verifybackup, starts and holds the later rows.
//! A target with a live server in it is refused with exit 7.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use hs_testkit::PgCluster;

use crate::support::{backup, cluster_with, init_and_backup, Scratch};

const COUNT_SQL: &str = "SELECT count(*), md5(string_agg(payload, ',' ORDER BY id)) FROM t";

fn restore(s: &Scratch, url: &str, target: &Path, extra: &[&str]) -> crate::support::Run {
    crate::support::restore(s, "demo", "latest", target, url, extra)
}

#[test]
fn delta_restore_rewrites_only_what_differs_and_refuses_a_running_server() {
    let pg = cluster_with(
        "CREATE TABLE t (id int primary key, payload text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 300000) g;
         CREATE TABLE gone (x int); INSERT INTO gone VALUES (1);
         CHECKPOINT;",
    );
    let t_file = pg
        .psql("SELECT pg_relation_filepath('t')")
        .expect("relation path");

    let s = Scratch::new();
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (url, conn, _) = init_and_backup(&s, &pg, "demo");

    let target = s.path("restored");
    let first = restore(&s, &url, &target, &[]).ok();
    assert_eq!(first["verified"], true, "{first}");

    // The cluster moves on; a second backup has more rows and one table fewer.
    pg.psql(
        "UPDATE t SET payload = payload || '-v2' WHERE id % 1000 = 0;
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(300001, 310000) g;
         DROP TABLE gone;
         CHECKPOINT;",
    )
    .expect("change data");
    let expected = pg.psql(COUNT_SQL).expect("checksum");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    backup(&s, "demo", &conn, &url).ok();

    // Damage the restored directory: modify, delete, add, and link outside.
    let rel = target.join(&t_file);
    let mut data = std::fs::read(&rel).unwrap();
    let mid = data.len() / 2;
    data[mid..mid + 16].copy_from_slice(b"DAMAGED-BY-TEST!");
    std::fs::write(&rel, &data).unwrap();
    std::fs::remove_file(target.join("global/pg_filenode.map")).unwrap();
    std::fs::write(target.join("stray.txt"), b"not in the backup").unwrap();
    std::fs::create_dir_all(target.join("base/stray_dir/deeper")).unwrap();
    std::fs::write(target.join("base/stray_dir/deeper/f"), b"x").unwrap();
    let outside = s.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("precious"), b"keep me").unwrap();
    std::os::unix::fs::symlink(&outside, target.join("link_out")).unwrap();

    // Without --delta the occupied target is refused, and the suggestion says how.
    let refused = restore(&s, &url, &target, &[]);
    assert_eq!(refused.status, 7, "{}", refused.stdout);
    assert_eq!(refused.err_code(), "conflict.target_not_empty");
    assert!(refused.json()["error"]["suggestion"]
        .as_str()
        .unwrap()
        .contains("--delta"));

    let r = restore(&s, &url, &target, &["--delta"]).ok();
    assert_eq!(r["verified"], true, "{r}");
    let files = r["files"].as_u64().unwrap();
    let kept = r["files_kept"].as_u64().unwrap();
    let written = r["files_written"].as_u64().unwrap();
    assert_eq!(kept + written, files, "{r}");
    assert!(
        kept * 10 >= files * 8,
        "most files should be kept: {kept} of {files} ({r})"
    );
    assert!(r["removed"].as_u64().unwrap() >= 3, "{r}");
    // Reading the table set hint bits on every page since the first backup, so the
    // table is fetched again; still less than a full restore.
    let fetched = r["bytes"].as_u64().unwrap();
    let full = first["bytes"].as_u64().unwrap();
    assert!(fetched < full, "delta fetched {fetched} bytes, full {full}");
    eprintln!("delta: {kept} of {files} files kept, {fetched} of {full} bytes fetched");
    assert!(!target.join("stray.txt").exists());
    assert!(!target.join("base/stray_dir").exists());
    assert!(std::fs::symlink_metadata(target.join("link_out")).is_err());
    assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep me");
    assert!(target.join("global/pg_filenode.map").is_file());

    // Once more, with one 8 KiB page of one relation file damaged: only that page and
    // pg_control (always written last) come from the repository.
    let mut data = std::fs::read(&rel).unwrap();
    let mid = data.len() / 2;
    data[mid..mid + 16].copy_from_slice(b"DAMAGED-AGAIN!!!");
    std::fs::write(&rel, &data).unwrap();
    let again = restore(&s, &url, &target, &["--delta"]).ok();
    assert_eq!(again["files_written"], 2, "{again}");
    assert_eq!(again["removed"], 0, "{again}");
    assert_eq!(again["bytes"], 2 * 8192, "{again}");

    drop(pg);
    let restored = PgCluster::start_existing(&target).expect("start restored cluster");
    assert_eq!(restored.psql(COUNT_SQL).expect("query restored"), expected);
    assert_eq!(
        restored
            .psql("SELECT count(*) FROM pg_class WHERE relname = 'gone'")
            .unwrap(),
        "0"
    );

    // A running server in the target: refused, nothing touched.
    let pid_before = std::fs::read_to_string(target.join("postmaster.pid")).unwrap();
    let running = restore(&s, &url, &target, &["--delta"]);
    assert_eq!(running.status, 7, "{}", running.stdout);
    assert_eq!(running.err_code(), "conflict.target_running");
    assert_eq!(
        std::fs::read_to_string(target.join("postmaster.pid")).unwrap(),
        pid_before
    );
    assert_eq!(restored.psql(COUNT_SQL).expect("still serving"), expected);
}
