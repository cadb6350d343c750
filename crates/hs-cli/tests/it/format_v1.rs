//! A repository written by pg_hardstorage 0.1 (repository format version 1), as the
//! release built at commit a1c735a wrote it, stays readable and takes backups in this
//! build's format (3) next to its old ones (docs/repository-format.md, "Changes").
//!
//! The fixture `tests/fixtures/repo-v1.tar.gz` holds that release's file://
//! repository (`repo/`, one backup of deployment `demo`), its keyring (`keyring`) and
//! what the backed-up table held (`expected.txt`). `make_format_v1_fixture` (ignored)
//! made it: `HS_V1_BIN=<0.1 binary> cargo nextest run -p hs-cli --run-ignored only
//! make_format_v1_fixture`.

use std::path::{Path, PathBuf};
use std::process::Command;

use hs_testkit::PgCluster;

use crate::support::{backup_ids, cluster_with, dir_bytes, files_under, hs, restore, Scratch};

pub(crate) const TABLE_SQL: &str = "CREATE TABLE t (id int primary key, payload text);
     INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
     CHECKPOINT;";
pub(crate) const CHECKSUM_SQL: &str =
    "SELECT count(*), md5(string_agg(payload, ',' ORDER BY id)) FROM t";

/// `tests/fixtures/<name>` of this crate.
pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Unpacks the fixture `name` (a repository, its keyring, the table's contents) into `s`
/// and checks that its marker says `version` and that every pack ends in `magic`; returns
/// the repository's URL and the table's checksum at backup time.
pub(crate) fn unpack_fixture(
    s: &Scratch,
    name: &str,
    version: u32,
    magic: &[u8],
) -> (String, String) {
    run(Command::new("tar")
        .arg("-xzf")
        .arg(fixture(name))
        .arg("-C")
        .arg(s.dir.path()));
    let marker = std::fs::read_to_string(s.repo_dir().join("config")).unwrap();
    assert!(
        marker.contains(&format!("\"version\": {version},")),
        "{marker}"
    );
    let packs = files_under(&s.repo_dir().join("data"));
    assert!(!packs.is_empty());
    assert!(packs.iter().all(|p| pack_magic(p) == magic));
    let expected = std::fs::read_to_string(s.path("expected.txt")).unwrap();
    (s.repo_url(), expected)
}

/// The fixture makers: the binary named by the environment variable `bin_var` makes a
/// repository, backs up a cluster holding `TABLE_SQL` into it, and the repository, its
/// keyring and the table's checksum go into the fixture `name`.
pub(crate) fn make_fixture(bin_var: &str, name: &str) {
    let bin = std::env::var(bin_var).unwrap_or_else(|_| panic!("{bin_var}: the old binary"));
    let s = Scratch::new();
    let url = s.repo_url();
    let old = |args: &[&str]| {
        run(Command::new(&bin)
            .args(args)
            .arg("--keyring")
            .arg(s.keyring()))
    };
    let pg = cluster_with(TABLE_SQL);
    std::fs::write(s.path("expected.txt"), pg.psql(CHECKSUM_SQL).unwrap()).unwrap();
    old(&["repo", "init", &url]);
    old(&[
        "backup",
        "demo",
        "--pg-connection",
        &pg.replication_conninfo(),
        "--repo",
        &url,
    ]);
    let out = fixture(name);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    run(Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(s.dir.path())
        .args(["repo", "keyring", "expected.txt"]));
}

/// The fixture's one backup lists, verifies and restores (verified) into `old-restored`;
/// returns its id and that directory.
pub(crate) fn restore_the_old_backup(s: &Scratch, url: &str) -> (String, PathBuf) {
    let list = hs(s, &["list", "demo", "--repo", url]).ok();
    assert_eq!(backup_ids(&list).len(), 1, "{list}");
    let old_id = backup_ids(&list)[0].to_owned();
    hs(s, &["verify", "demo", &old_id, "--repo", url]).ok();
    let target = s.path("old-restored");
    let r = restore(s, "demo", &old_id, &target, url, &[]).ok();
    assert_eq!(r["verified"], true);
    (old_id, target)
}

/// The trailer magic of the pack at `path` (`HSPACK01` to `HSPACK03`).
pub(crate) fn pack_magic(path: &Path) -> Vec<u8> {
    let b = std::fs::read(path).unwrap();
    b[b.len() - 8..].to_vec()
}

pub(crate) fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `path` is a pack this build wrote (version 3, its trailer magic).
fn is_new_pack(path: &Path) -> bool {
    pack_magic(path) == b"HSPACK03"
}

#[test]
fn a_format_1_repository_reads_verifies_and_takes_new_backups() {
    let s = Scratch::new();
    let (url, expected) = unpack_fixture(&s, "repo-v1.tar.gz", 1, b"HSPACK01");
    let marker = std::fs::read_to_string(s.repo_dir().join("config")).unwrap();
    let packs = |s: &Scratch| files_under(&s.repo_dir().join("data"));

    let (old_id, target) = restore_the_old_backup(&s, &url);
    let restored = PgCluster::start_existing(&target).expect("start the restored 0.1 backup");
    assert_eq!(restored.psql(CHECKSUM_SQL).unwrap(), expected.trim());
    drop(restored);

    // A backup by this build into the same repository: format 3 objects next to the
    // old ones (another cluster, so the system identifier change is allowed).
    let pg = cluster_with(&format!(
        "{TABLE_SQL} INSERT INTO t SELECT g, 'new' FROM generate_series(20001, 30000) g;"
    ));
    let want = pg.psql(CHECKSUM_SQL).unwrap();
    let conn = pg.replication_conninfo();
    let before = dir_bytes(&s.repo_dir());
    let b = hs(
        &s,
        &[
            "backup",
            "demo",
            "--pg-connection",
            &conn,
            "--repo",
            &url,
            "--allow-system-id-change",
        ],
    )
    .ok();
    let new_id = b["backup_id"].as_str().unwrap().to_owned();
    assert!(packs(&s).iter().any(|p| is_new_pack(p)), "no format 3 pack");
    assert!(
        packs(&s).iter().any(|p| !is_new_pack(p)),
        "the old packs stay"
    );
    // The marker is never rewritten.
    assert_eq!(
        std::fs::read_to_string(s.repo_dir().join("config")).unwrap(),
        marker
    );
    // initdb's catalogs are mostly the same pages: the first format 3 backup
    // deduplicated against the format 1 index (its parent names no packs).
    let added = dir_bytes(&s.repo_dir()) - before;
    assert!(
        added < before,
        "the first format 3 backup added {added} bytes to a {before}-byte repository"
    );

    // Both backups verify, the whole repository verifies, both restore.
    hs(&s, &["verify", "demo", &new_id, "--repo", &url]).ok();
    hs(&s, &["verify", "demo", &old_id, "--repo", &url]).ok();
    hs(&s, &["repo", "verify", "--repo", &url]).ok();
    let target = s.path("new-restored");
    restore(&s, "demo", &new_id, &target, &url, &[]).ok();
    drop(pg);
    let restored = PgCluster::start_existing(&target).expect("start the restored format 3 backup");
    assert_eq!(restored.psql(CHECKSUM_SQL).unwrap(), want);
    drop(restored);
    let target = s.path("old-again");
    restore(&s, "demo", &old_id, &target, &url, &[]).ok();

    // gc keeps everything: both backups reference their packs.
    let gc = hs(&s, &["repo", "gc", "--repo", &url, "--grace", "0s"]).ok();
    assert_eq!(gc["condemned"].as_array().map_or(0, Vec::len), 0, "{gc}");
}

/// Makes `tests/fixtures/repo-v1.tar.gz` with the binary `$HS_V1_BIN` (a 0.1 release).
#[test]
#[ignore = "run by hand with HS_V1_BIN set, to remake the fixture"]
fn make_format_v1_fixture() {
    make_fixture("HS_V1_BIN", "repo-v1.tar.gz");
}
