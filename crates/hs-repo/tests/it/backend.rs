//! Backend conformance: the behaviour every `Backend` must have, run
//! against each backend (today: `file://`).

use std::sync::Arc;

use bytes::Bytes;
use hs_repo::Backend;

use crate::support::{
    assert_no_temporaries, create_once_then_replace, fs_backend, on_fs_backend,
    put_around_the_c_prefix, race_put_if_absent,
};

/// Checks create-if-absent, replace, ranges, listing, delete and stat.
pub async fn conformance(b: Arc<dyn Backend>) {
    assert!(b.stat("c/x/one").await.unwrap().is_none());
    assert_eq!(
        b.get("c/x/one").await.unwrap_err().code(),
        "notfound.object"
    );
    create_once_then_replace(&b, "c/x/one", b"first", b"second", b"replaced").await;
    assert_eq!(&b.get("c/x/one").await.unwrap()[..], b"replaced");
    assert_eq!(&b.get_range("c/x/one", 2, 4).await.unwrap()[..], b"plac");
    assert_eq!(&b.get_range("c/x/one", 8, 0).await.unwrap()[..], b"");
    assert_eq!(
        b.get_range("c/x/one", 6, 10).await.unwrap_err().code(),
        "verify.object_truncated"
    );
    assert_eq!(b.stat("c/x/one").await.unwrap().unwrap().size, 8);
    assert_eq!(
        b.put_if_absent("../escape", Bytes::new())
            .await
            .unwrap_err()
            .code(),
        "usage.invalid_object_name"
    );

    // Exactly one of many concurrent creators wins.
    assert_eq!(race_put_if_absent(&b, "c/race", 8).await.len(), 1);
    let race = b.get("c/race").await.unwrap();
    assert!(race.iter().all(|&x| x == race[0]) && race.len() == 1000);

    put_around_the_c_prefix(&b).await;
    let names = |v: Vec<hs_repo::ObjectInfo>| v.into_iter().map(|o| o.name).collect::<Vec<_>>();
    assert_eq!(
        names(b.list("c/").await.unwrap()),
        ["c/race", "c/x/one", "c/y"]
    );
    assert_eq!(names(b.list("c").await.unwrap()).len(), 4);
    assert_eq!(names(b.list("").await.unwrap()).len(), 4);
    assert!(b.list("nothing/").await.unwrap().is_empty());
    b.delete("c/y").await.unwrap();
    b.delete("c/y").await.unwrap();
    assert!(b.stat("c/y").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_backend_conformance() {
    // No temporary files are left behind.
    on_fs_backend(conformance).await;
}

/// Listing while another task creates and deletes objects in the same directory (leases
/// come and go while gc lists `locks/`), many times: on a local disk the window is small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_list_survives_objects_deleted_while_listing() {
    let (_dir, b) = fs_backend();
    crate::conformance::listing_while_deleting(&b, 1000).await;
}

#[tokio::test]
async fn fs_removes_stale_temporaries_only() {
    let (dir, b) = fs_backend();
    crate::conformance::stale_temporaries_are_removed(&b, &dir.path().join("repo")).await;
}

/// `file://` basics: create-if-absent, replace, ranges, prefix listing, delete, stat.
#[tokio::test]
async fn fs_backend_basics() {
    let (dir, b) = fs_backend();
    assert!(b.stat("a/b/c").await.unwrap().is_none());
    create_once_then_replace(&b, "a/b/c", b"one", b"two", b"three").await;
    assert_eq!(&b.get_range("a/b/c", 1, 3).await.unwrap()[..], b"hre");
    assert_eq!(
        b.get_range("a/b/c", 3, 10).await.unwrap_err().code(),
        "verify.object_truncated"
    );
    assert_eq!(b.get("nope").await.unwrap_err().code(), "notfound.object");
    for (name, data) in [("a/x", &b"1"[..]), ("ab", b"22")] {
        b.put_if_absent(name, Bytes::from_static(data))
            .await
            .unwrap();
    }
    let names: Vec<String> = b
        .list("a/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(names, vec!["a/b/c", "a/x"]);
    let all = b.list("").await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all.iter().map(|o| o.size).sum::<u64>(), 5 + 1 + 2);
    assert_eq!(b.list("a").await.unwrap().len(), 3);
    b.delete("a/x").await.unwrap();
    b.delete("a/x").await.unwrap();
    assert_eq!(b.stat("a/b/c").await.unwrap().unwrap().size, 5);
    // No temp files left behind.
    assert_no_temporaries(dir.path());
}
