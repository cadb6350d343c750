//! CRC-32C arithmetic beyond one pass over bytes: the checksum of a file whose parts are
//! known only by their own checksums.
//!
//! PostgreSQL's `backup_manifest` gives each file a CRC-32C by default. An incremental
//! backup (PostgreSQL 17+) sends only the changed blocks of a relation file; the full
//! file's checksum is then derived from the previous full file's checksum, the old and
//! new contents of the changed blocks and the two lengths, without reading the unchanged
//! blocks. Two facts make that possible:
//!
//! - the *raw* CRC (register started at 0, no final inversion) is linear over XOR for
//!   inputs of equal length: `raw(a ^ b) = raw(a) ^ raw(b)`;
//! - appending `n` zero bytes multiplies the register by `x^(8n)` modulo the polynomial
//!   ([`crc32c_shift`]), which takes `O(log n)` multiplications, not `n` steps.
//!
//! The standard CRC-32C of `data` (what the manifest holds) is
//! `!crc32c_update(!0, data)` = `raw(data) ^ !crc32c_shift(!0, len)`.

/// Continues a CRC-32C (Castagnoli, as PostgreSQL's WAL and `backup_manifest` use)
/// over `data`: the register is `crc` (start with `!0` and invert the result at the
/// end). Inputs of 64 bytes and more go through `crc-fast`, which uses the CPU's CRC
/// and carry-less multiply instructions where it has them (SSE 4.2 / PCLMULQDQ, ARMv8
/// CRC); a restore checks every byte it writes with it.
pub fn crc32c_update(crc: u32, data: &[u8]) -> u32 {
    if data.len() < 64 {
        return crc32c_update_portable(crc, data);
    }
    let mut d =
        crc_fast::Digest::new_with_init_state(crc_fast::CrcAlgorithm::Crc32Iscsi, u64::from(crc));
    d.update(data);
    // `finalize` applies the algorithm's final inversion; the register is what was
    // there before it.
    (d.finalize() as u32) ^ !0
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), slicing-by-8 tables.
const CRC_TABLES: [[u32; 256]; 8] = crc_tables();

const fn crc_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut s = 1;
        while s < 8 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xFF) as usize];
            s += 1;
        }
        i += 1;
    }
    t
}

/// [`crc32c_update`] one table lookup per byte (slicing by 8): for short inputs, where
/// the accelerated routine's setup costs more than it saves, and as its reference in
/// the tests.
fn crc32c_update_portable(mut crc: u32, data: &[u8]) -> u32 {
    let t = &CRC_TABLES;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) ^ crc;
        crc = t[7][(lo & 0xFF) as usize]
            ^ t[6][((lo >> 8) & 0xFF) as usize]
            ^ t[5][((lo >> 16) & 0xFF) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][c[4] as usize]
            ^ t[2][c[5] as usize]
            ^ t[1][c[6] as usize]
            ^ t[0][c[7] as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ t[0][((crc ^ u32::from(b)) & 0xFF) as usize];
    }
    crc
}

/// The CRC-32C polynomial, bit-reflected (bit 31 stands for `x^0`).
const POLY: u32 = 0x82F6_3B78;

/// `x^(2^k)` modulo the polynomial, for `k` in `0..64` (reflected form).
const X_POW_2K: [u32; 64] = x_pow_2k_table();

/// `a * b` modulo the polynomial, both in reflected form.
const fn mul_mod(a: u32, mut b: u32) -> u32 {
    let mut m = 1u32 << 31;
    let mut p = 0u32;
    while m != 0 {
        if a & m != 0 {
            p ^= b;
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    p
}

const fn x_pow_2k_table() -> [u32; 64] {
    let mut t = [0u32; 64];
    // x^1 is bit 30 in reflected form (bit 31 is x^0).
    t[0] = 1 << 30;
    let mut k = 1;
    while k < 64 {
        t[k] = mul_mod(t[k - 1], t[k - 1]);
        k += 1;
    }
    t
}

/// `x^(8 * bytes)` modulo the polynomial.
fn x_pow_bytes(bytes: u64) -> u32 {
    let mut p = 1u32 << 31; // x^0
    let mut n = bytes;
    // 8 * bytes = bytes * 2^3: bit j of `bytes` stands for x^(2^(j+3)).
    let mut k = 3usize;
    while n != 0 {
        if n & 1 != 0 {
            p = mul_mod(X_POW_2K[k], p);
        }
        n >>= 1;
        k += 1;
    }
    p
}

/// The raw register `reg` after `bytes` zero bytes more: `reg * x^(8 * bytes)`.
pub fn crc32c_shift(reg: u32, bytes: u64) -> u32 {
    if bytes == 0 || reg == 0 {
        return reg;
    }
    mul_mod(x_pow_bytes(bytes), reg)
}

/// The raw CRC-32C of `data`: register started at 0, no final inversion. Linear over
/// XOR for inputs of equal length.
pub fn crc32c_raw(data: &[u8]) -> u32 {
    crc32c_update(0, data)
}

/// The standard CRC-32C (PostgreSQL's manifest checksum) of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    !crc32c_update(!0, data)
}

/// The standard CRC-32C of content whose raw CRC is `raw` and length `len` bytes.
pub fn crc32c_from_raw(raw: u32, len: u64) -> u32 {
    raw ^ !crc32c_shift(!0, len)
}

/// The raw CRC-32C of content whose standard CRC-32C is `crc` and length `len` bytes.
pub fn crc32c_to_raw(crc: u32, len: u64) -> u32 {
    crc ^ !crc32c_shift(!0, len)
}

/// The standard CRC-32C of `a` followed by `b`, from the CRCs of each and `b`'s length.
pub fn crc32c_combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    crc32c_shift(crc_a, len_b) ^ crc_b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_vector_and_empty_input() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c_from_raw(crc32c_raw(b"123456789"), 9), 0xE306_9283);
    }

    #[test]
    fn shifting_equals_feeding_zeros() {
        for reg in [1u32, 0xDEAD_BEEF, 0xFFFF_FFFF, 0x8000_0000] {
            for n in [0u64, 1, 2, 7, 8, 13, 4096, 8192, 100_000] {
                let zeros = vec![0u8; n as usize];
                assert_eq!(
                    crc32c_shift(reg, n),
                    crc32c_update(reg, &zeros),
                    "reg {reg:#x} n {n}"
                );
            }
        }
    }

    #[test]
    fn a_gigabyte_of_zeros_is_computed_not_fed() {
        // 2^30 zero bytes, checked against doubling 1 MiB of zeros ten times.
        let mib = vec![0u8; 1 << 20];
        let mut crc = crc32c(&mib);
        for i in 0..10 {
            crc = crc32c_combine(crc, crc, 1u64 << (20 + i));
        }
        assert_eq!(crc, crc32c_from_raw(0, 1 << 30));
    }

    proptest! {
        #[test]
        fn the_accelerated_update_matches_the_table(
            data in proptest::collection::vec(any::<u8>(), 0..5000),
            reg in any::<u32>(),
            split in 0usize..5000,
        ) {
            prop_assert_eq!(crc32c_update(reg, &data), crc32c_update_portable(reg, &data));
            let at = split.min(data.len());
            prop_assert_eq!(
                crc32c_update(crc32c_update(reg, &data[..at]), &data[at..]),
                crc32c_update_portable(reg, &data)
            );
        }

        #[test]
        fn combine_matches_one_pass(a in proptest::collection::vec(any::<u8>(), 0..300),
                                    b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let whole = [a.as_slice(), b.as_slice()].concat();
            prop_assert_eq!(crc32c_combine(crc32c(&a), crc32c(&b), b.len() as u64), crc32c(&whole));
        }

        #[test]
        fn raw_is_linear_and_round_trips(a in proptest::collection::vec(any::<u8>(), 1..200), seed in any::<u64>()) {
            let b: Vec<u8> = a.iter().enumerate().map(|(i, _)| (seed >> (i % 8 * 8)) as u8 ^ i as u8).collect();
            let x: Vec<u8> = a.iter().zip(&b).map(|(p, q)| p ^ q).collect();
            prop_assert_eq!(crc32c_raw(&x), crc32c_raw(&a) ^ crc32c_raw(&b));
            let len = a.len() as u64;
            prop_assert_eq!(crc32c_to_raw(crc32c(&a), len), crc32c_raw(&a));
            prop_assert_eq!(crc32c_from_raw(crc32c_raw(&a), len), crc32c(&a));
        }
    }
}
