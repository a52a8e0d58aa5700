//! The one source of randomness in core: a generator its driver seeds (STYLE.md, rule 2).

/// SplitMix64: a tiny, fast, well-mixed generator. Same seed, same sequence, on every machine.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded by its driver.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        crate::hash::mix(self.0)
    }

    /// A draw in `0..n` (Lemire's multiply-shift: no division, bias below 2^-40 for our sizes).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0);
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}
