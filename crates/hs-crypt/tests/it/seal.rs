//! Properties of `MasterKey::seal` / `MasterKey::open`.

use hs_crypt::{Domain, MasterKey, SEAL_OVERHEAD};
use proptest::prelude::*;

fn domain() -> impl Strategy<Value = Domain> {
    proptest::sample::select(Domain::ALL.to_vec())
}

proptest! {
    #[test]
    fn round_trip_in_every_domain(data in proptest::collection::vec(any::<u8>(), 0..4096), d in domain()) {
        let mk = MasterKey::generate();
        let sealed = mk.seal(d, &data);
        prop_assert_eq!(sealed.len(), data.len() + SEAL_OVERHEAD);
        prop_assert_eq!(mk.open(d, &sealed).unwrap(), data);
    }

    #[test]
    fn any_flipped_bit_fails(data in proptest::collection::vec(any::<u8>(), 0..1024), d in domain(), pick in any::<prop::sample::Index>()) {
        let mk = MasterKey::generate();
        let mut sealed = mk.seal(d, &data);
        let bit = pick.index(sealed.len() * 8);
        sealed[bit / 8] ^= 1 << (bit % 8);
        let e = mk.open(d, &sealed).unwrap_err();
        prop_assert_eq!(e.code(), "verify.auth_tag_mismatch");
    }

    #[test]
    fn any_truncation_fails(data in proptest::collection::vec(any::<u8>(), 0..1024), d in domain(), pick in any::<prop::sample::Index>()) {
        let mk = MasterKey::generate();
        let sealed = mk.seal(d, &data);
        let len = pick.index(sealed.len());
        let e = mk.open(d, &sealed[..len]).unwrap_err();
        prop_assert_eq!(e.code(), "verify.auth_tag_mismatch");
    }

    #[test]
    fn other_domain_fails(data in proptest::collection::vec(any::<u8>(), 0..256), a in domain(), b in domain()) {
        prop_assume!(a != b);
        let mk = MasterKey::generate();
        let e = mk.open(b, &mk.seal(a, &data)).unwrap_err();
        prop_assert_eq!(e.code(), "verify.auth_tag_mismatch");
    }
}

#[test]
fn every_domain_pair_is_separated() {
    let mk = MasterKey::generate();
    for &a in Domain::ALL {
        let sealed = mk.seal(a, b"payload");
        for &b in Domain::ALL {
            let r = mk.open(b, &sealed);
            if a == b {
                assert_eq!(r.unwrap(), b"payload");
            } else {
                assert_eq!(r.unwrap_err().code(), "verify.auth_tag_mismatch");
            }
        }
    }
}

#[test]
fn sealing_twice_differs() {
    let mk = MasterKey::generate();
    let a = mk.seal(Domain::Chunk, b"same plaintext");
    let b = mk.seal(Domain::Chunk, b"same plaintext");
    assert_ne!(a, b);
    assert_ne!(a[1..33], b[1..33], "salts differ");
    assert_ne!(a[33..], b[33..], "ciphertexts differ");
}

#[test]
fn other_master_key_fails_and_error_is_exit_9() {
    let a = MasterKey::generate();
    let b = MasterKey::generate();
    let e = b.open(Domain::Wal, &a.seal(Domain::Wal, b"x")).unwrap_err();
    assert_eq!(e.code(), "verify.auth_tag_mismatch");
    assert_eq!(e.kind(), hs_crypt::ErrorKind::AuthTagMismatch);
    assert!(!e.is_temporary());
    assert!(e
        .suggestion()
        .is_some_and(|s| s.contains("pg_hardstorage repo verify")));
}

#[test]
fn key_survives_to_bytes_from_bytes() {
    let a = MasterKey::generate();
    let b = MasterKey::from_bytes(&a.to_bytes()).unwrap();
    assert_eq!(
        b.open(Domain::Chunk, &a.seal(Domain::Chunk, b"x")).unwrap(),
        b"x"
    );
    assert_eq!(a.chunk_id_key(), b.chunk_id_key());
    assert_ne!(a.chunk_id_key(), MasterKey::generate().chunk_id_key());
    assert_ne!(a.chunk_id_key().to_vec(), a.to_bytes());
}

/// Format v1 must open forever. The golden object was sealed with master key
/// 32 x 0x42 as `Domain::Manifest` over `golden`, and cross-checked with an
/// independent implementation (Python `blake3` + `cryptography` AESGCM):
/// key = keyed_blake3(derive_key("pg_hardstorage v1 seal manifest", mk), salt),
/// nonce = 12 zero bytes, aad = 0x01 || "manifest".
#[test]
fn golden_object_opens() {
    let mk = MasterKey::from_bytes(&[0x42; 32]).unwrap();
    let golden = hex_decode(GOLDEN);
    assert_eq!(mk.open(Domain::Manifest, &golden).unwrap(), b"golden");
}

const GOLDEN: &str = include_str!("golden_manifest_v1.hex");

fn hex_decode(s: &str) -> Vec<u8> {
    let s = s.trim();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
