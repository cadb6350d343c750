//! sftp:// and scp:// backends against a real OpenSSH sshd on 127.0.0.1 (hs-testkit's
//! `Sshd`, one with the SFTP subsystem and one without): backend behaviour, a repository
//! round trip, and the error codes for a wrong host key, a missing or unauthorized key
//! and an unreachable port.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use hs_repo::{open_backend, Backend, Repository};
use hs_testkit::{sshd_or_skip, Sshd, SshdOptions};

use crate::support::{
    assert_no_temporaries, create_once_then_replace, noise, race_put_if_absent, Env,
};

/// A remote repository directory (the "remote" host is this machine).
struct Remote {
    _dir: tempfile::TempDir,
    path: String,
}

fn remote() -> Remote {
    let dir = tempfile::Builder::new()
        .prefix("hs-ssh-remote-")
        .tempdir()
        .unwrap();
    let path = format!("{}/repo dir", dir.path().display());
    Remote { _dir: dir, path }
}

/// Backend behaviour every store must show (the shared conformance suite adds more).
async fn behaviour(b: Arc<dyn Backend>) {
    assert!(b.stat("a/b/c").await.unwrap().is_none());
    assert_eq!(b.get("a/b/c").await.unwrap_err().code(), "notfound.object");
    assert!(b.list("").await.unwrap().is_empty());

    create_once_then_replace(&b, "a/b/c", b"one", b"two", b"three").await;
    assert_eq!(&b.get("a/b/c").await.unwrap()[..], b"three");
    assert_eq!(&b.get_range("a/b/c", 1, 3).await.unwrap()[..], b"hre");
    assert_eq!(&b.get_range("a/b/c", 0, 0).await.unwrap()[..], b"");
    assert_eq!(
        b.get_range("a/b/c", 3, 10).await.unwrap_err().code(),
        "verify.object_truncated"
    );
    assert_eq!(
        b.get_range("nope", 0, 1).await.unwrap_err().code(),
        "notfound.object"
    );
    let st = b.stat("a/b/c").await.unwrap().unwrap();
    assert_eq!(st.size, 5);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let m = st.modified.expect("modified time");
    assert!((now - m).abs() < 600, "mtime {m} vs now {now}");

    // Empty objects, binary content, a bigger object (several SFTP packets, shell pipes).
    assert!(b.put_if_absent("empty", Bytes::new()).await.unwrap());
    assert_eq!(b.get("empty").await.unwrap().len(), 0);
    let big = noise(7, (5 << 20) + 123);
    assert!(b
        .put_if_absent("data/ff/big", Bytes::from(big.clone()))
        .await
        .unwrap());
    assert_eq!(&b.get("data/ff/big").await.unwrap()[..], &big[..]);
    let off = (3 << 20) + 17;
    assert_eq!(
        &b.get_range("data/ff/big", off as u64, 100_000)
            .await
            .unwrap()[..],
        &big[off..off + 100_000]
    );

    b.put_if_absent("a/x", Bytes::from_static(b"1"))
        .await
        .unwrap();
    b.put_if_absent("ab", Bytes::from_static(b"22"))
        .await
        .unwrap();
    let names = |v: Vec<hs_repo::ObjectInfo>| v.into_iter().map(|o| o.name).collect::<Vec<_>>();
    assert_eq!(names(b.list("a/").await.unwrap()), vec!["a/b/c", "a/x"]);
    assert_eq!(
        names(b.list("a").await.unwrap()),
        vec!["a/b/c", "a/x", "ab"]
    );
    assert_eq!(names(b.list("data/").await.unwrap()), vec!["data/ff/big"]);
    assert!(b.list("zzz/").await.unwrap().is_empty());
    let all = b.list("").await.unwrap();
    assert_eq!(
        names(all.clone()),
        vec!["a/b/c", "a/x", "ab", "data/ff/big", "empty"]
    );
    assert_eq!(
        all.iter().map(|o| o.size).sum::<u64>(),
        5 + 1 + 2 + big.len() as u64
    );

    b.delete("a/x").await.unwrap();
    b.delete("a/x").await.unwrap();
    assert!(b.stat("a/x").await.unwrap().is_none());

    assert_eq!(
        b.put_if_absent("../escape", Bytes::from_static(b"x"))
            .await
            .unwrap_err()
            .code(),
        "usage.invalid_object_name"
    );
    assert_eq!(
        b.get("a/.tmp-x").await.unwrap_err().code(),
        "usage.invalid_object_name"
    );

    // Concurrent racers on one name: exactly one wins, and the stored object is its data.
    let winners = race_put_if_absent(&b, "race/obj", 6).await;
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(
        &b.get("race/obj").await.unwrap()[..],
        &[winners[0]; 1000][..]
    );
}

async fn conformance_on(sshd: &Sshd, scheme: &str) {
    let r = remote();
    let b = open_backend(&sshd.url(scheme, &r.path)).unwrap();
    crate::conformance::run_conformance_unpaged(b).await;
    assert_no_temporaries(std::path::Path::new(&r.path));

    let r = remote();
    let b = open_backend(&sshd.url(scheme, &r.path)).unwrap();
    assert!(b.location().starts_with(&format!("{scheme}://")));
    assert!(!b.location().contains("key="), "{}", b.location());
    behaviour(b.clone()).await;
    assert_no_temporaries(std::path::Path::new(&r.path));
    crate::conformance::stale_temporaries_are_removed(&b, std::path::Path::new(&r.path)).await;
    drop(b);

    // Repository round trip through the backend.
    let r2 = remote();
    let env = Env::new();
    let url = sshd.url(scheme, &r2.path);
    let repo = Repository::init(&url, &env.keyring).await.unwrap();
    assert_eq!(
        Repository::init(&url, &env.keyring)
            .await
            .unwrap_err()
            .code(),
        "conflict.repo_exists"
    );
    let mut w = repo.writer().await.unwrap();
    let mut refs = Vec::new();
    for i in 0..50u64 {
        let data = Bytes::from(noise(i, 20_000 + i as usize));
        refs.push((w.add(data.clone()).await.unwrap(), data));
    }
    w.finish().await.unwrap();
    let repo = Repository::open(&url, &env.keyring).await.unwrap();
    let reader = repo.reader().await.unwrap();
    for (r, data) in &refs {
        assert_eq!(reader.read(r).await.unwrap(), *data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_backend_on_real_sshd() {
    let Some(sshd) = sshd_or_skip("sftp_backend_on_real_sshd", SshdOptions { sftp: true }) else {
        return;
    };
    conformance_on(&sshd, "sftp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scp_backend_on_sshd_without_sftp_subsystem() {
    let Some(sshd) = sshd_or_skip(
        "scp_backend_on_sshd_without_sftp_subsystem",
        SshdOptions { sftp: false },
    ) else {
        return;
    };
    // This server has no SFTP subsystem: sftp:// says so and points at scp://.
    let r = remote();
    let b = open_backend(&sshd.url("sftp", &r.path)).unwrap();
    let e = b.stat("x").await.unwrap_err();
    assert_eq!(e.code(), "preflight.ssh_no_sftp", "{e}");
    assert!(e.suggestion().unwrap().contains("scp://"));

    conformance_on(&sshd, "scp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_connection_errors_have_codes() {
    let Some(sshd) = sshd_or_skip("ssh_connection_errors_have_codes", SshdOptions::default())
    else {
        return;
    };
    let r = remote();
    let stat_error =
        |url: String| async move { open_backend(&url).unwrap().stat("x").await.unwrap_err() };
    for scheme in ["sftp", "scp"] {
        let url = |key: &Path, known_hosts: &Path| {
            format!(
                "{scheme}://{}@127.0.0.1:{}{}?key={}&known_hosts={}",
                sshd.user(),
                sshd.port(),
                r.path,
                key.display(),
                known_hosts.display()
            )
        };
        // A known_hosts entry with a different key: refused, never accepted.
        let e = stat_error(url(&sshd.client_key(), &sshd.wrong_known_hosts())).await;
        assert_eq!(e.code(), "auth.ssh_host_key", "{scheme}: {e}");
        assert!(!e.is_temporary());

        // No known_hosts entry at all (an empty file): also refused.
        let empty = sshd.dir().join("empty_known_hosts");
        std::fs::write(&empty, "").unwrap();
        let e = stat_error(url(&sshd.client_key(), &empty)).await;
        assert_eq!(e.code(), "auth.ssh_host_key", "{scheme}: {e}");

        // A key file that does not exist.
        let missing = Path::new("/nonexistent/id_ed25519");
        let e = stat_error(url(missing, &sshd.known_hosts())).await;
        assert_eq!(e.code(), "auth.ssh_key_missing", "{scheme}: {e}");

        // A key the server does not authorize.
        let other = sshd.dir().join("other_host_key");
        let e = stat_error(url(&other, &sshd.known_hosts())).await;
        assert_eq!(e.code(), "auth.ssh_denied", "{scheme}: {e}");
        assert!(e.to_string().contains("Permission denied"), "{e}");

        // Nothing listens on this port.
        let port = hs_testkit::free_port().unwrap();
        let url = format!(
            "{scheme}://{}@127.0.0.1:{port}{}?key={}&known_hosts={}&connect_timeout=5",
            sshd.user(),
            r.path,
            sshd.client_key().display(),
            sshd.known_hosts().display()
        );
        let e = stat_error(url).await;
        assert_eq!(e.code(), "unreachable.ssh", "{scheme}: {e}");
        assert!(e.is_temporary());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_backend_reconnects_after_the_server_restarts() {
    let Some(mut sshd) = sshd_or_skip(
        "ssh_backend_reconnects_after_the_server_restarts",
        SshdOptions::default(),
    ) else {
        return;
    };
    let r = remote();
    let sftp = open_backend(&sshd.url("sftp", &r.path)).unwrap();
    let scp = open_backend(&sshd.url("scp", &r.path)).unwrap();
    assert!(sftp
        .put_if_absent("one", Bytes::from_static(b"1"))
        .await
        .unwrap());
    assert!(scp.stat("one").await.unwrap().is_some());
    // Cut every connection, then start the same server again on the same port.
    sshd.restart().unwrap();
    assert_eq!(&sftp.get("one").await.unwrap()[..], b"1");
    assert_eq!(&scp.get("one").await.unwrap()[..], b"1");
}
