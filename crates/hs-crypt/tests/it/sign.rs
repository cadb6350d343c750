//! Ed25519 signatures.

use hs_crypt::{Signature, SigningKey, VerifyingKey};

#[test]
fn sign_verify_and_tamper() {
    let sk = SigningKey::generate();
    let vk = sk.verifying_key();
    let sig = sk.sign(b"manifest bytes");
    vk.verify(b"manifest bytes", &sig).unwrap();
    let e = vk.verify(b"manifest bytez", &sig).unwrap_err();
    assert_eq!(e.code(), "verify.signature_invalid");

    let mut bad = sig.to_bytes();
    bad[10] ^= 1;
    let bad = Signature::from_bytes(&bad).unwrap();
    assert_eq!(
        vk.verify(b"manifest bytes", &bad).unwrap_err().code(),
        "verify.signature_invalid"
    );

    let other = SigningKey::generate().verifying_key();
    assert_eq!(
        other.verify(b"manifest bytes", &sig).unwrap_err().code(),
        "verify.signature_invalid"
    );
}

#[test]
fn hex_and_bytes_round_trip() {
    let sk = SigningKey::generate();
    let vk = sk.verifying_key();
    let hex = vk.to_hex();
    assert_eq!(hex.len(), 64);
    assert_eq!(VerifyingKey::from_hex(&hex).unwrap(), vk);
    assert_eq!(VerifyingKey::from_hex(&hex.to_uppercase()).unwrap(), vk);
    for bad in ["", "zz", &hex[..62], &format!("{hex}00")] {
        assert_eq!(
            VerifyingKey::from_hex(bad).unwrap_err().code(),
            "usage.verifying_key_invalid"
        );
    }
    let sig = sk.sign(b"m");
    assert_eq!(Signature::from_bytes(&sig.to_bytes()).unwrap(), sig);
    assert_eq!(
        Signature::from_bytes(&[0u8; 63]).unwrap_err().code(),
        "verify.signature_invalid"
    );
}
