//! The per-deployment backup catalog on real storage (`file://` and S3 on moto): a
//! listing from the catalog equals the listing that opens every manifest; a missing,
//! damaged, stale or doubled catalog is repaired from the manifests, never trusted over
//! them; a manifest whose object changed is opened (and shown damaged if it is).

use std::sync::Arc;

use bytes::Bytes;
use hs_repo::{open_backend, Backend, BackupListing, Repository};

use crate::conformance::server_bucket;
use crate::support::{manifest_of, Env};

const DEP: &str = "dep";

fn id(n: u32) -> String {
    format!("202612{n:02}T010000Z")
}

async fn put(repo: &Repository, n: u32) {
    let m = manifest_of(
        DEP,
        &id(n),
        ("0/1000028", "0/1000100"),
        (
            format!("2026-12-{n:02}T01:00:00Z"),
            format!("2026-12-{n:02}T01:00:01Z"),
        ),
        Vec::new(),
    );
    repo.put_manifest(&m).await.unwrap();
}

async fn catalogs(b: &Arc<dyn Backend>) -> Vec<String> {
    b.list(&format!("deployments/{DEP}/catalog/"))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect()
}

fn ids(l: &BackupListing) -> Vec<String> {
    l.backups.iter().map(|m| m.backup_id.clone()).collect()
}

/// The catalog's listing is the one that opens every manifest, damaged ones included.
async fn same_as_checked(repo: &Repository) -> BackupListing {
    let cat = repo.list_backup_summaries_cataloged(DEP).await.unwrap();
    let checked = repo.list_backup_summaries_checked(DEP).await.unwrap();
    assert_eq!(cat.backups, checked.backups);
    assert_eq!(cat.damaged, checked.damaged);
    cat
}

async fn run_catalog(repo: Repository, b: Arc<dyn Backend>) {
    assert!(same_as_checked(&repo).await.backups.is_empty());
    assert!(catalogs(&b).await.is_empty());
    for n in 1..=3 {
        put(&repo, n).await;
    }
    // One catalog object, named after the newest backup; the listing from it is right.
    let c = catalogs(&b).await;
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(c[0].contains(&id(3)), "{c:?}");
    assert_eq!(ids(&same_as_checked(&repo).await), [id(1), id(2), id(3)]);

    // Missing: repaired from the manifests, and written again.
    b.delete(&c[0]).await.unwrap();
    assert_eq!(ids(&same_as_checked(&repo).await), [id(1), id(2), id(3)]);
    assert_eq!(catalogs(&b).await.len(), 1);

    // Two objects (a writer died between writing the new one and deleting the old one):
    // merged, then one again.
    let old = catalogs(&b).await.remove(0);
    let old_bytes = b.get(&old).await.unwrap();
    put(&repo, 4).await;
    assert!(b.stat(&old).await.unwrap().is_none(), "superseded, deleted");
    assert!(b.put_if_absent(&old, old_bytes).await.unwrap());
    assert_eq!(catalogs(&b).await.len(), 2);
    assert_eq!(
        ids(&same_as_checked(&repo).await),
        [id(1), id(2), id(3), id(4)]
    );
    assert_eq!(catalogs(&b).await.len(), 1);

    // Stale: a backup deleted (retention deletes manifests) is not listed from the
    // catalog, and the next catalog drops it.
    b.delete(&format!("deployments/{DEP}/backups/{}", id(1)))
        .await
        .unwrap();
    assert_eq!(ids(&same_as_checked(&repo).await), [id(2), id(3), id(4)]);

    // Damaged catalog: ignored (the manifests answer), then replaced.
    let c = catalogs(&b).await.remove(0);
    let mut bad = b.get(&c).await.unwrap().to_vec();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    b.put(&c, Bytes::from(bad)).await.unwrap();
    assert_eq!(ids(&same_as_checked(&repo).await), [id(2), id(3), id(4)]);
    let c2 = catalogs(&b).await;
    assert_eq!(c2.len(), 1);
    assert_ne!(c2[0], c, "the damaged one was superseded");

    // A catalog copied to another name does not open (it is bound to its name).
    let copy = format!("deployments/{DEP}/catalog/{}-0000000000000000", id(9));
    b.put(&copy, b.get(&c2[0]).await.unwrap()).await.unwrap();
    assert_eq!(ids(&same_as_checked(&repo).await), [id(2), id(3), id(4)]);

    // A manifest replaced by something of another size: opened, and shown damaged.
    let m3 = format!("deployments/{DEP}/backups/{}", id(3));
    b.put(&m3, Bytes::from_static(b"not a manifest"))
        .await
        .unwrap();
    let l = same_as_checked(&repo).await;
    assert_eq!(ids(&l), [id(2), id(4)]);
    assert_eq!(l.damaged.len(), 1);
    assert_eq!(l.damaged[0].backup_id, id(3));
    assert_eq!(l.damaged[0].object, m3);

    // Another deployment's catalog is its own.
    assert!(repo
        .list_backup_summaries_cataloged("other")
        .await
        .unwrap()
        .backups
        .is_empty());
}

#[tokio::test]
async fn fs_catalog_is_repaired_from_manifests_never_trusted_over_them() {
    let env = Env::new();
    let repo = env.small_pack_repo().await;
    run_catalog(repo, open_backend(&env.url).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_catalog_is_repaired_from_manifests_never_trusted_over_them() {
    let Some((_server, bucket)) =
        server_bucket(hs_testkit::StorageKind::S3, "s3_catalog", "catalog")
    else {
        return;
    };
    let env = Env::new();
    let repo = Repository::builder(&bucket.url)
        .init(&env.keyring)
        .await
        .unwrap();
    run_catalog(repo, open_backend(&bucket.url).unwrap()).await;
}
