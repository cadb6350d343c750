//! AEAD choice benchmark: AES-256-GCM via `ring` versus via `aes-gcm`.
//!
//! hs-crypt sets up a fresh key for every sealed object (the per-object key is
//! derived from the master key, the domain and a random salt), so each
//! iteration measures key schedule + seal of one buffer, exactly as production
//! does. Run with `cargo bench -p hs-crypt --bench aead`.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const AAD: &[u8] = b"\x01bench";

fn seal_ring(key: &[u8; 32], buf: &mut Vec<u8>) {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte key"));
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key([0; 12]), Aad::from(AAD), buf)
        .expect("seal");
    buf.extend_from_slice(tag.as_ref());
}

fn seal_aes_gcm(key: &[u8; 32], buf: &mut Vec<u8>) {
    let cipher = aes_gcm::Aes256Gcm::new(key.into());
    let tag = cipher
        .encrypt_in_place_detached(&[0u8; 12].into(), AAD, buf)
        .expect("seal");
    buf.extend_from_slice(&tag);
}

fn bench_seal(c: &mut Criterion) {
    let key = [7u8; 32];
    let mut group = c.benchmark_group("aes256gcm_seal_with_key_setup");
    for size in [8 * 1024usize, 1024 * 1024] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("ring", size), &data, |b, data| {
            let mut buf = Vec::with_capacity(size + 16);
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(data);
                seal_ring(black_box(&key), &mut buf);
                black_box(&buf);
            })
        });
        group.bench_with_input(BenchmarkId::new("aes-gcm", size), &data, |b, data| {
            let mut buf = Vec::with_capacity(size + 16);
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(data);
                seal_aes_gcm(black_box(&key), &mut buf);
                black_box(&buf);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_seal);
criterion_main!(benches);
