//! A backup releases its repository lease on every way it ends, before it returns: a
//! process exits right after the error, and a lease left behind holds up `repo gc`
//! until it lapses (15 minutes).

use hs_backup::{run_backup, BackupOptions, NoProgress};
use hs_repo::Repository;

use crate::support::cfg;

/// Each call on its own current-thread runtime that is dropped afterwards, as the CLI's
/// runtime is when the process exits: work a drop handler merely spawned never runs.
fn on_fresh_runtime<T>(f: impl std::future::Future<Output = T>) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let out = rt.block_on(f);
    drop(rt);
    out
}

#[test]
fn backup_failing_after_it_took_its_lease_leaves_no_lease_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keyring =
        hs_crypt::Keyring::create(&dir.path().join("kr").join("keyring")).expect("keyring");
    let url = format!("file://{}/repo", dir.path().display());
    on_fresh_runtime(Repository::init(&url, &keyring)).expect("repo init");

    // Nothing listens on port 1: connecting fails after the lease was taken.
    let conn = cfg("postgresql://nobody@127.0.0.1:1/postgres");
    let err = on_fresh_runtime(async {
        let repo = Repository::open(&url, &keyring).await.expect("open");
        run_backup(&conn, &repo, &BackupOptions::new("main"), &NoProgress).await
    })
    .expect_err("backup without a server succeeded");
    assert!(err.code().starts_with("unreachable."), "{err:?}");

    let leases = on_fresh_runtime(async {
        let repo = Repository::open(&url, &keyring).await.expect("open");
        repo.list_leases().await.expect("list leases")
    });
    assert!(leases.is_empty(), "lease left behind: {leases:?}");
}
