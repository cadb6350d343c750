//! Backup then restore on file://: the restored cluster answers with the same rows,
//! the repository holds no plaintext, a second backup of an unchanged cluster is tiny.

use hs_testkit::PgCluster;

use crate::support::{
    any_file_contains, backup, backup_ids, cluster_with, dir_bytes, hs, init_and_backup, restore,
    Scratch,
};

const MARKER: &str = "HS_PLAINTEXT_MARKER_b7e1c0d2";

#[test]
fn backup_restore_round_trip_on_file_repo() {
    let pg = cluster_with(&format!(
        "CREATE TABLE t (id int primary key, payload text);
         INSERT INTO t SELECT g, md5(g::text) || '{MARKER}' FROM generate_series(1, 200000) g;
         CHECKPOINT;"
    ));
    let expected = pg
        .psql("SELECT count(*), sum(length(payload)), md5(string_agg(payload, ',' ORDER BY id)) FROM t")
        .expect("checksum");

    let s = Scratch::new();
    let url = s.repo_url();
    let init = hs(&s, &["repo", "init", &url]).ok();
    assert_eq!(init["keyring_created"], true);

    // A second init of the same URL is a conflict, exit 7.
    let again = hs(&s, &["repo", "init", &url]);
    assert_eq!(again.status, 7);
    assert_eq!(again.err_code(), "conflict.repo_exists");

    let conn = pg.replication_conninfo();
    let first = backup(&s, "demo", &conn, &url).ok();
    let first_id = first["backup_id"].as_str().expect("backup id").to_owned();
    let repo_after_first = dir_bytes(&s.repo_dir());
    assert!(first["logical_bytes"].as_u64().unwrap() > 10 << 20);

    // Nothing of the table's contents reaches the repository in plaintext.
    assert_eq!(any_file_contains(&s.repo_dir(), MARKER.as_bytes()), None);

    // A second backup of the unchanged cluster adds less than 2% of the first's bytes.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = backup(&s, "demo", &conn, &url).ok();
    let added = dir_bytes(&s.repo_dir()) - repo_after_first;
    assert!(
        (added as f64) < 0.02 * repo_after_first as f64,
        "second backup added {added} bytes, first took {repo_after_first}"
    );
    assert_ne!(second["backup_id"], first["backup_id"]);

    let list = hs(&s, &["list", "demo", "--repo", &url]).ok();
    let ids = backup_ids(&list);
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], first_id);

    // Restore the first backup by id and check it (default): every file's CRC-32C as
    // written against the server's backup_manifest, then pg_verifybackup without its
    // second read.
    let target = s.path("restored");
    let r = restore(&s, "demo", &first_id, &target, &url, &[]).ok();
    assert_eq!(r["verified"], true);
    let listed = std::fs::read_to_string(target.join("backup_manifest"))
        .expect("backup_manifest")
        .matches("\"Path\":")
        .count() as u64;
    assert!(listed > 900, "{listed}");
    assert_eq!(r["checksums_checked"], listed, "{r}");
    assert_eq!(r["checksums_read_back"], false, "{r}");

    // --verify=full reads every file back with pg_verifybackup as well.
    let full = restore(
        &s,
        "demo",
        "latest",
        &s.path("full"),
        &url,
        &["--verify=full"],
    )
    .ok();
    assert_eq!(full["checksums_read_back"], true, "{full}");
    assert_eq!(full["checksums_checked"], listed, "{full}");

    // Restoring onto a non-empty directory is refused with a conflict.
    let again = restore(&s, "demo", "latest", &target, &url, &[]);
    assert_eq!(again.status, 7);
    assert_eq!(again.err_code(), "conflict.target_not_empty");

    drop(pg);
    let restored = PgCluster::start_existing(&target).expect("start restored cluster");
    let got = restored
        .psql("SELECT count(*), sum(length(payload)), md5(string_agg(payload, ',' ORDER BY id)) FROM t")
        .expect("query restored");
    assert_eq!(got, expected);
}

#[test]
fn missing_backup_and_bad_names_have_codes() {
    let s = Scratch::new();
    let url = s.repo_url();
    hs(&s, &["repo", "init", &url]).ok();

    let r = restore(&s, "demo", "latest", &s.path("t"), &url, &[]);
    assert_eq!(r.status, 6);
    assert_eq!(r.err_code(), "notfound.backup");
    assert!(!s.path("t").join("global").exists());

    let r = hs(&s, &["list", "Bad/Name", "--repo", &url]);
    assert_eq!(r.status, 2);
    assert_eq!(r.err_code(), "usage.deployment_invalid");

    let r = hs(
        &s,
        &[
            "backup",
            "demo",
            "--pg-connection",
            "host=127.0.0.1 port=1 user=x",
            "--repo",
            &url,
        ],
    );
    assert_eq!(r.status, 8, "{}", r.stdout);
    assert_eq!(r.err_code(), "unreachable.connection_refused");

    let r = hs(
        &s,
        &["list", "demo", "--repo", "file:///nonexistent/hs-repo"],
    );
    assert_eq!(r.status, 6);
    assert_eq!(r.err_code(), "notfound.repo");

    // No --repo, no PG_HARDSTORAGE_REPO, no config file: the error names all three ways.
    let r = hs(&s, &["list", "demo"]);
    assert_eq!(r.status, 2);
    assert_eq!(r.err_code(), "usage.repo_missing");

    let r = hs(&s, &["list", "demo", "--no-such-flag"]);
    assert_eq!(r.status, 2);
    assert_eq!(r.err_code(), "usage.invalid_arguments");
}

#[test]
fn version_names_commit_and_build_time() {
    let out = crate::support::bin().arg("version").output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.starts_with("pg_hardstorage v0."), "{line}");
    assert!(line.contains(", built "), "{line}");
    // `--version` and `-V` print the same line, exit 0, and need no command.
    for flag in ["--version", "-V"] {
        let out = crate::support::bin().arg(flag).output().unwrap();
        assert!(out.status.success(), "{flag}: {out:?}");
        assert_eq!(String::from_utf8(out.stdout).unwrap(), line, "{flag}");
    }
}

/// When the restore starts writing: records the live leases, then does what `rotate
/// --apply` does to a backup it drops (deletes its manifest object) and runs `repo gc
/// --apply --grace 0s`, which must condemn the backup's packs but wait for the
/// restore's lease instead of deleting them.
struct DropAndGcDuringRestore<'a> {
    s: &'a Scratch,
    url: String,
    manifest: std::path::PathBuf,
    repo: hs_repo::Repository,
    seen: std::sync::Mutex<Vec<hs_repo::LeaseInfo>>,
    gc: std::sync::Mutex<Option<serde_json::Value>>,
}

impl hs_pitr::RestoreProgress for DropAndGcDuringRestore<'_> {
    fn start(&self, _total: u64) {
        let leases = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(self.repo.list_leases())
        })
        .expect("list leases");
        self.seen.lock().unwrap().extend(leases);
        std::fs::remove_file(&self.manifest).expect("drop the backup's manifest");
        let gc = tokio::task::block_in_place(|| {
            hs(
                self.s,
                &[
                    "repo", "gc", "--apply", "--grace", "0s", "--repo", &self.url,
                ],
            )
            .ok()
        });
        *self.gc.lock().unwrap() = Some(gc);
    }
}

#[test]
fn a_restore_holds_a_lease_gc_waits_for_and_releases_it() {
    let pg = cluster_with("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g; CHECKPOINT;");
    let expected = pg
        .psql("SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM t")
        .expect("checksum");
    let s = Scratch::new();
    let (url, _, backup) = init_and_backup(&s, &pg, "demo");
    drop(pg);
    let backup_id = backup["backup_id"].as_str().unwrap().to_owned();
    let manifest = s
        .repo_dir()
        .join(format!("deployments/demo/backups/{backup_id}"));
    assert!(manifest.is_file(), "no manifest at {}", manifest.display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let target = s.path("restored");
    rt.block_on(async {
        let keyring = hs_crypt::Keyring::load(&s.keyring()).unwrap();
        let repo = hs_repo::Repository::open(&url, &keyring).await.unwrap();
        let packs: Vec<String> = repo
            .list_packs()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert!(!packs.is_empty());
        let spy = DropAndGcDuringRestore {
            s: &s,
            url: url.clone(),
            manifest: manifest.clone(),
            repo: repo.clone(),
            seen: std::sync::Mutex::new(Vec::new()),
            gc: std::sync::Mutex::new(None),
        };
        let mut opts = hs_pitr::RestoreOptions::new(
            "demo",
            hs_pitr::BackupSelector::Id(backup_id.clone()),
            target.clone(),
        );
        opts.pg_bin_dir = Some(hs_testkit::pg_bin_dir());
        let summary = hs_pitr::restore(&repo, &opts, &spy).await.unwrap();
        assert!(summary.verified, "pg_verifybackup did not run");
        let seen = spy.seen.lock().unwrap().clone();
        let lease = seen
            .iter()
            .find(|l| {
                l.command == "restore demo" && l.packs && l.kind == hs_repo::LeaseKind::Shared
            })
            .unwrap_or_else(|| panic!("no restore lease while restoring: {seen:?}"));

        // gc ran while the restore held its lease: every pack of the dropped backup
        // condemned, none deleted, the record waiting for the live lease.
        let gc = spy.gc.lock().unwrap().clone().expect("gc ran");
        let mut condemned: Vec<String> = gc["condemned"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect();
        condemned.sort();
        let mut all = packs.clone();
        all.sort();
        assert_eq!(condemned, all, "{gc}");
        assert_eq!(gc["deleted"].as_array().map(Vec::len), Some(0), "{gc}");
        let waiting = gc["waiting"].as_array().unwrap();
        assert_eq!(waiting.len(), 1, "{gc}");
        assert!(
            waiting[0]["reason"]
                .as_str()
                .unwrap()
                .contains("lease(s) older than the condemnation still live"),
            "{gc}"
        );

        // Released at the end; the next gc deletes what it condemned.
        let after = repo.list_leases().await.unwrap();
        assert!(
            !after.iter().any(|l| l.id == lease.id) && after.is_empty(),
            "{after:?}"
        );
        let gc2 = hs(
            &s,
            &["repo", "gc", "--apply", "--grace", "0s", "--repo", &url],
        )
        .ok();
        let mut deleted: Vec<String> = gc2["deleted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect();
        deleted.sort();
        assert_eq!(deleted, all, "{gc2}");
        assert_eq!(gc2["waiting"].as_array().map(Vec::len), Some(0), "{gc2}");
        assert!(repo.list_packs().await.unwrap().is_empty());
    });

    // What the restore wrote while gc ran is the whole backup.
    let restored = PgCluster::start_existing(&target).expect("start restored cluster");
    let got = restored
        .psql("SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM t")
        .expect("query restored");
    assert_eq!(got, expected);
}
