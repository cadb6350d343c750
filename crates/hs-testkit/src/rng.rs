//! Seeded randomness for test drivers: a small generator whose sequence repeats from its
//! seed (so a failing run can be repeated), and deterministic noise bytes.

/// xorshift64* seeded by the caller; the same seed gives the same sequence.
#[derive(Clone, Debug)]
pub struct SeededRng(u64);

impl SeededRng {
    /// A generator starting from `seed` (any value; zero is made odd).
    pub fn new(seed: u64) -> SeededRng {
        SeededRng(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `lo..=hi` (`lo` when `hi <= lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// A probability in `lo..hi`.
    pub fn prob(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `len` deterministic pseudo-random bytes from `seed` (xorshift; incompressible).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{noise, SeededRng};

    #[test]
    fn sequences_repeat_from_their_seed_and_stay_in_range() {
        let mut a = SeededRng::new(42);
        let mut b = SeededRng::new(42);
        for _ in 0..1000 {
            let x = a.range(5, 9);
            assert_eq!(x, b.range(5, 9));
            assert!((5..=9).contains(&x));
            let p = a.prob(0.1, 0.2);
            assert_eq!(p, b.prob(0.1, 0.2));
            assert!((0.1..0.2).contains(&p), "{p}");
        }
        assert_eq!(SeededRng::new(7).range(3, 3), 3);
        assert_eq!(noise(3, 100), noise(3, 100));
        assert_ne!(noise(3, 100), noise(4, 100));
    }
}
