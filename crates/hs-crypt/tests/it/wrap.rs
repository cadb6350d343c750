//! age wrapping of secrets.

use hs_crypt::{unwrap_secret, wrap_secret, Keyring};

fn keyring(dir: &tempfile::TempDir, name: &str) -> Keyring {
    Keyring::create(&dir.path().join(name)).unwrap()
}

#[test]
fn wrap_unwrap_round_trip_and_multiple_recipients() {
    let dir = tempfile::tempdir().unwrap();
    let a = keyring(&dir, "a");
    let b = keyring(&dir, "b");
    let secret = [7u8; 32];
    let wrapped = wrap_secret(&secret, &[a.recipient()]).unwrap();
    assert!(!wrapped.windows(32).any(|w| w == secret));
    assert_eq!(unwrap_secret(&wrapped, &a).unwrap(), secret);

    let both = wrap_secret(&secret, &[a.recipient(), b.recipient()]).unwrap();
    assert_eq!(unwrap_secret(&both, &a).unwrap(), secret);
    assert_eq!(unwrap_secret(&both, &b).unwrap(), secret);
}

#[test]
fn unwrap_with_another_keyring_is_auth_error() {
    let dir = tempfile::tempdir().unwrap();
    let a = keyring(&dir, "a");
    let other = keyring(&dir, "other");
    let wrapped = wrap_secret(b"master", &[a.recipient()]).unwrap();
    let e = unwrap_secret(&wrapped, &other).unwrap_err();
    assert_eq!(e.code(), "auth.keyring_no_matching_identity");
    assert!(e.suggestion().is_some_and(|s| s.contains("key list")));
}

#[test]
fn corrupt_wrapped_secret_is_verify_error() {
    let dir = tempfile::tempdir().unwrap();
    let a = keyring(&dir, "a");
    let wrapped = wrap_secret(b"master key bytes", &[a.recipient()]).unwrap();
    // Garbage, a flipped payload byte, and a truncated payload.
    let mut flipped = wrapped.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    for bad in [&b"not age"[..], &flipped, &wrapped[..wrapped.len() - 5]] {
        let e = unwrap_secret(bad, &a).unwrap_err();
        assert_eq!(e.code(), "verify.wrapped_secret_corrupt", "{e}");
    }
}

#[test]
fn bad_recipients_are_usage_errors() {
    for rs in [
        vec![],
        vec!["age1nope".to_owned()],
        vec!["ssh-ed25519 AAAA".to_owned()],
    ] {
        let e = wrap_secret(b"s", &rs).unwrap_err();
        assert_eq!(e.code(), "usage.recipient_invalid");
    }
}
