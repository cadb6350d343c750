//! A repository written by pg_hardstorage 0.2 (repository format version 2), as the build
//! at commit 30ba891 wrote it, stays readable, and a backup of the same cluster by this
//! build deduplicates against it (docs/repository-format.md, "Changes").
//!
//! The fixture `tests/fixtures/repo-v2.tar.gz` holds that build's file:// repository
//! (`repo/`, one backup of deployment `demo`), its keyring (`keyring`) and what the
//! backed-up table held (`expected.txt`). `make_format_v2_fixture` (ignored) made it:
//! `HS_V2_BIN=<binary at 30ba891> cargo nextest run -p hs-cli --run-ignored only
//! make_format_v2_fixture`.

use hs_testkit::PgCluster;

use crate::format_v1::{
    make_fixture, pack_magic, restore_the_old_backup, unpack_fixture, CHECKSUM_SQL,
};
use crate::support::{dir_bytes, files_under, hs, restore, Scratch};

#[test]
fn a_format_2_repository_reads_and_its_cluster_backs_up_incrementally_in_format_3() {
    let s = Scratch::new();
    let (url, expected) = unpack_fixture(&s, "repo-v2.tar.gz", 2, b"HSPACK02");
    let marker = std::fs::read_to_string(s.repo_dir().join("config")).unwrap();
    let packs = |s: &Scratch| files_under(&s.repo_dir().join("data"));
    let old_packs = packs(&s);

    let (old_id, target) = restore_the_old_backup(&s, &url);

    // The restored cluster is the one the old backup was taken of (same system
    // identifier): a few rows more, then a backup by this build into the same
    // repository, whose parent is the format 2 backup.
    let pg = PgCluster::start_existing(&target).expect("start the restored 0.2 backup");
    assert_eq!(pg.psql(CHECKSUM_SQL).unwrap(), expected.trim());
    pg.psql("INSERT INTO t SELECT g, 'new' FROM generate_series(20001, 20100) g; CHECKPOINT;")
        .unwrap();
    let want = pg.psql(CHECKSUM_SQL).unwrap();
    let before = dir_bytes(&s.repo_dir());
    let b = hs(
        &s,
        &[
            "backup",
            "demo",
            "--pg-connection",
            &pg.replication_conninfo(),
            "--repo",
            &url,
        ],
    )
    .ok();
    let new_id = b["backup_id"].as_str().unwrap().to_owned();
    let now = packs(&s);
    assert!(
        now.iter().any(|p| pack_magic(p) == b"HSPACK03"),
        "no format 3 pack"
    );
    assert!(
        old_packs.iter().all(|p| now.contains(p)),
        "the old packs stay"
    );
    assert_eq!(
        std::fs::read_to_string(s.repo_dir().join("config")).unwrap(),
        marker,
        "the marker is never rewritten"
    );
    // Unchanged pages keep their format 2 references: the 32-byte ids of the old
    // backup's lists, cut to 16 bytes, match the new ids. What is stored again is what
    // changed, the WAL and the new lists and manifest.
    let added = dir_bytes(&s.repo_dir()) - before;
    assert!(
        added * 10 < before,
        "the format 3 backup added {added} bytes to a {before}-byte repository"
    );

    // Both backups verify, the whole repository verifies, the new one restores.
    hs(&s, &["verify", "demo", &new_id, "--repo", &url]).ok();
    hs(&s, &["verify", "demo", &old_id, "--repo", &url]).ok();
    hs(&s, &["repo", "verify", "--repo", &url]).ok();
    drop(pg);
    let target = s.path("new-restored");
    restore(&s, "demo", &new_id, &target, &url, &[]).ok();
    let restored = PgCluster::start_existing(&target).expect("start the restored format 3 backup");
    assert_eq!(restored.psql(CHECKSUM_SQL).unwrap(), want);
    drop(restored);

    // gc keeps everything: both backups reference their packs.
    let gc = hs(&s, &["repo", "gc", "--repo", &url, "--grace", "0s"]).ok();
    assert_eq!(gc["condemned"].as_array().map_or(0, Vec::len), 0, "{gc}");

    // Without the old backup, its packs hold the pages the new backup took by position
    // and chunks no backup needs (the old WAL, changed pages): gc repacks them, reading
    // version 2 packs and version 1 index objects and writing version 3 packs.
    let rotate = [
        "rotate", "demo", "--repo", &url, "--policy", "count", "--keep", "1", "--apply",
    ];
    hs(&s, &rotate).ok();
    let gc = hs(
        &s,
        &[
            "repo",
            "gc",
            "--repo",
            &url,
            "--grace",
            "0s",
            "--max-unused",
            "0",
            "--apply",
        ],
    )
    .ok();
    assert!(
        !gc["repacked"].as_array().unwrap().is_empty(),
        "nothing repacked: {gc}"
    );
    let after = packs(&s);
    assert!(
        old_packs.iter().any(|p| !after.contains(p)),
        "no old pack was deleted: {gc}"
    );
    assert!(after
        .iter()
        .filter(|p| !old_packs.contains(p))
        .all(|p| pack_magic(p) == b"HSPACK03"));
    hs(&s, &["verify", "demo", &new_id, "--repo", &url]).ok();
    hs(&s, &["repo", "verify", "--repo", &url]).ok();
    let target = s.path("after-gc");
    restore(&s, "demo", &new_id, &target, &url, &[]).ok();
    let restored = PgCluster::start_existing(&target).expect("start the backup restored after gc");
    assert_eq!(restored.psql(CHECKSUM_SQL).unwrap(), want);
}

/// Makes `tests/fixtures/repo-v2.tar.gz` with the binary `$HS_V2_BIN` (built at 30ba891).
#[test]
#[ignore = "run by hand with HS_V2_BIN set, to remake the fixture"]
fn make_format_v2_fixture() {
    make_fixture("HS_V2_BIN", "repo-v2.tar.gz");
}
