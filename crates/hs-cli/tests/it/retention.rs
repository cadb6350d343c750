//! `rotate` and `repo gc` end to end: three backups of a real cluster with WAL
//! streamed beside them, rotate to one backup, gc with no grace period while
//! the streamer still runs, then the kept backup restores and replays every commit.

use crate::support::{
    archive_current_wal, backup, backup_ids, cluster_with, dir_bytes, hs, init_repo, restore,
    start_restored, Scratch, Streamer,
};

#[test]
fn rotate_keep_one_then_gc_frees_space_and_latest_restores() {
    let pg = cluster_with("CREATE TABLE t (id int primary key, v int, pad text)");
    pg.psql("INSERT INTO t SELECT g, 0, repeat('x', 200) FROM generate_series(1, 20000) g")
        .unwrap();
    let s = Scratch::new();
    let (url, conn) = init_repo(&s, &pg);
    let streamer = Streamer::start(&s, "demo", &conn, &url, &[]);

    let mut ids = Vec::new();
    for round in 1..=3 {
        let b = backup(&s, "demo", &conn, &url).ok();
        ids.push(b["backup_id"].as_str().unwrap().to_owned());
        // Rewrite every row: the next backup shares none of these pages.
        pg.psql(&format!("UPDATE t SET v = {round}")).unwrap();
        pg.psql("CHECKPOINT").unwrap();
    }
    pg.psql("INSERT INTO t VALUES (0, 99, 'after the last backup')")
        .unwrap();
    archive_current_wal(&pg, "demo");
    let expected = pg.psql("SELECT count(*), sum(v) FROM t").unwrap();

    let segments = |s: &Scratch| -> u64 {
        hs(s, &["wal", "list", "demo", "--repo", &url]).ok()["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["segments"].as_u64().unwrap())
            .sum()
    };
    let segs_before = segments(&s);
    let bytes_before = dir_bytes(&s.repo_dir());

    // Usage errors: a policy without its parameter.
    let r = hs(&s, &["rotate", "demo", "--repo", &url, "--policy", "count"]);
    assert_eq!(r.status, 2);
    assert_eq!(r.err_code(), "usage.retention_policy_incomplete");

    // Dry run: the plan, nothing deleted.
    let args = [
        "rotate", "demo", "--repo", &url, "--policy", "count", "--keep", "1",
    ];
    let plan = hs(&s, &args).ok();
    assert_eq!(plan["applied"], false);
    let decisions = plan["backups"].as_array().unwrap();
    assert_eq!(decisions.len(), 3);
    assert_eq!(decisions[0]["backup_id"], ids[2].as_str());
    assert_eq!(decisions[0]["keep"], true);
    assert!(decisions[1..].iter().all(|d| d["keep"] == false), "{plan}");
    assert!(
        plan["wal"]["segments_deleted"].as_u64().unwrap() > 0,
        "{plan}"
    );
    let listed = hs(&s, &["list", "demo", "--repo", &url]).ok();
    assert_eq!(listed["backups"].as_array().unwrap().len(), 3);

    // Apply: two manifests and the WAL below the kept backup go.
    let mut apply = args.to_vec();
    apply.push("--apply");
    let done = hs(&s, &apply).ok();
    assert_eq!(done["applied"], true);
    assert_eq!(done["deleted"]["backups"], 2);
    let listed = hs(&s, &["list", "demo", "--repo", &url]).ok();
    assert_eq!(backup_ids(&listed), [ids[2].as_str()]);
    assert!(segments(&s) < segs_before);

    // gc with the default grace period leaves the fresh packs alone; with none,
    // it deletes what only the old backups used, while the streamer runs.
    // It says why it kept them, in numbers.
    let gc = hs(&s, &["repo", "gc", "--repo", &url, "--apply"]).ok();
    assert!(gc["deleted"].as_array().unwrap().is_empty(), "{gc}");
    assert!(gc["repacked"].as_array().unwrap().is_empty(), "{gc}");
    let kept = gc["kept"].as_array().unwrap();
    assert!(
        kept.iter()
            .any(|k| k["reason"] == "grace" && k["packs"].as_u64().unwrap() > 0),
        "{gc}"
    );
    let names = |v: &serde_json::Value, key: &str| -> Vec<String> {
        let mut n: Vec<String> = v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    let dry = hs(&s, &["repo", "gc", "--repo", &url, "--grace", "0s"]).ok();
    assert_eq!(dry["applied"], false);
    let gc = hs(
        &s,
        &["repo", "gc", "--repo", &url, "--grace", "0s", "--apply"],
    )
    .ok();
    assert!(gc["deleted_bytes"].as_u64().unwrap() > 0, "{gc}");
    // With no grace and no backup lease, the unreferenced packs and the packs it
    // repacked all go in this run.
    assert_eq!(
        names(&gc, "repacked"),
        names(&dry, "repacked"),
        "{gc}\n{dry}"
    );
    let mut want = names(&dry, "deleted");
    want.extend(names(&dry, "repacked"));
    want.sort();
    assert_eq!(names(&gc, "deleted"), want, "{gc}\n{dry}");
    assert!(gc["waiting"].as_array().unwrap().is_empty(), "{gc}");
    let again = hs(
        &s,
        &["repo", "gc", "--repo", &url, "--grace", "0s", "--apply"],
    )
    .ok();
    assert!(again["repacked"].as_array().unwrap().is_empty(), "{again}");
    assert!(again["deleted"].as_array().unwrap().is_empty(), "{again}");
    hs(&s, &["repo", "verify", "--repo", &url]).ok();
    let bytes_after = dir_bytes(&s.repo_dir());
    assert!(
        bytes_after < bytes_before,
        "repository did not shrink: {bytes_before} -> {bytes_after}"
    );

    // The old backups are gone for good.
    let old = restore(&s, "demo", &ids[0], &s.path("old"), &url, &[]);
    assert_eq!(old.status, 6, "{}", old.stdout);

    // Stop the streamer cleanly, then restore the latest backup and replay.
    let (status, _) = streamer.stop();
    assert!(status.success(), "wal stream exit {status:?}");
    drop(pg);

    let target = s.path("restored");
    let r = restore(&s, "demo", "latest", &target, &url, &[]).ok();
    assert_eq!(r["backup_id"], ids[2].as_str());
    assert_eq!(r["recovery_configured"], true);
    s.share_with_postgres(true);
    let restored = start_restored(&target);
    assert_eq!(
        restored.psql("SELECT count(*), sum(v) FROM t").unwrap(),
        expected
    );
}
