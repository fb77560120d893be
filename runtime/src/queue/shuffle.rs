//! The one-time shuffle of a Random room's pre-queue, implemented identically
//! here and in `lua/common.lua` so both stores give the same order for a seed.

/// Park–Miller generator: small enough to be exact in Lua's doubles.
pub struct Lcg(u64);

pub const MODULUS: u64 = 2_147_483_647;
const MULTIPLIER: u64 = 48_271;

impl Lcg {
    pub fn new(seed: u64) -> Self {
        let state = seed % MODULUS;
        Lcg(if state == 0 { 1 } else { state })
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = (self.0 * MULTIPLIER) % MODULUS;
        self.0 % n
    }
}

/// Fisher–Yates over `items`, drawing from `Lcg::new(seed)`.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut rng = Lcg::new(seed);
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_permutation_and_depends_on_the_seed() {
        let mut a: Vec<u32> = (0..50).collect();
        let mut b = a.clone();
        shuffle(&mut a, 7);
        shuffle(&mut b, 8);
        assert_ne!(a, b);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn zero_seed_is_usable() {
        let mut v = vec![1, 2, 3];
        shuffle(&mut v, 0);
        assert_eq!(v.len(), 3);
    }
}
