//! Keyring file creation, loading and refusal rules.

use std::os::unix::fs::PermissionsExt;

use hs_crypt::Keyring;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn create_then_load_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cfg/pg_hardstorage/keyring");
    let k = Keyring::create(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert!(k.recipient().starts_with("age1"));

    let text = std::fs::read_to_string(&path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["version"], 1);
    assert!(json["age_identity"]
        .as_str()
        .unwrap()
        .starts_with("AGE-SECRET-KEY-1"));
    assert_eq!(json["signing_key"].as_str().unwrap().len(), 64);

    let l = Keyring::load(&path).unwrap();
    assert_eq!(l.path(), path);
    assert_eq!(l.recipient(), k.recipient());
    assert_eq!(
        l.signing_key().verifying_key(),
        k.signing_key().verifying_key()
    );
    let sig = l.signing_key().sign(b"m");
    k.signing_key().verifying_key().verify(b"m", &sig).unwrap();

    // Debug shows neither secret.
    let dbg = format!("{l:?}");
    assert!(!dbg.contains(json["age_identity"].as_str().unwrap()));
    assert!(!dbg.to_lowercase().contains("secret-key"));
    assert!(!dbg.contains(json["signing_key"].as_str().unwrap()));
}

#[test]
fn create_refuses_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    let first = Keyring::create(&path).unwrap();
    let e = Keyring::create(&path).unwrap_err();
    assert_eq!(e.code(), "conflict.keyring_exists");
    assert_eq!(Keyring::load(&path).unwrap().recipient(), first.recipient());
}

#[test]
fn group_readable_keyring_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    Keyring::create(&path).unwrap();
    for m in [0o644, 0o640, 0o604, 0o610] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).unwrap();
        let e = Keyring::load(&path).unwrap_err();
        assert_eq!(e.code(), "preflight.keyring_permissions");
        assert_eq!(
            e.suggestion(),
            Some(format!("chmod 600 {}", path.display()).as_str())
        );
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    Keyring::load(&path).unwrap();
}

#[test]
fn missing_keyring_is_notfound() {
    let dir = tempfile::tempdir().unwrap();
    let e = Keyring::load(&dir.path().join("nope")).unwrap_err();
    assert_eq!(e.code(), "notfound.keyring");
    assert!(e.suggestion().is_some_and(|s| s.contains("repo init")));
}

#[test]
fn truncated_or_garbage_keyring_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    Keyring::create(&path).unwrap();
    let full = std::fs::read(&path).unwrap();
    let garbage: &[&[u8]] = &[&full[..full.len() / 2], b"", b"\xff\xfe", b"[]", b"{}"];
    for bytes in garbage {
        std::fs::write(&path, bytes).unwrap();
        let e = Keyring::load(&path).unwrap_err();
        assert_eq!(e.code(), "usage.keyring_invalid", "{e}");
    }
    std::fs::write(&path, vec![b' '; 70 * 1024]).unwrap();
    assert_eq!(
        Keyring::load(&path).unwrap_err().code(),
        "usage.keyring_invalid"
    );
}

#[test]
fn load_or_create_creates_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    let (a, created) = Keyring::load_or_create(&path).unwrap();
    assert!(created);
    let (b, created) = Keyring::load_or_create(&path).unwrap();
    assert!(!created);
    assert_eq!(a.recipient(), b.recipient());
}
