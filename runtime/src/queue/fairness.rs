//! Provable fairness of a Random room's shuffle. Before the room opens it
//! publishes a commitment to the shuffle's seed; after the shuffle, the
//! seed, its salt and the join list, so anyone can recompute the order.
//!
//! The commitment is the SHA-256, in lowercase hex, of the ASCII text
//! `usher-shuffle-v1:{seed}:{salt}`: `seed` in decimal (1 to 2^31 - 2),
//! `salt` 32 lowercase hex digits. The salt is 128 random bits, so the
//! commitment of a 31-bit seed cannot be reversed by trying every seed.
//!
//! Recomputing the order ([`ALGORITHM`]): the join list is the pre-queue's
//! tickets in join order, the general lane's then the priority lane's, and
//! each lane is dealt out on its own with the same seed. For one lane's
//! entries `t[0..n]`: start with `x = seed`; for `i` from `n - 1` down to
//! 1, set `x = x * 48271 mod 2147483647` and `j = x mod (i + 1)`, and swap
//! `t[i]` and `t[j]`. The visitor who joined that lane with ticket `t[k]`
//! is then number `k + 1` in it, and holds the lane's `k`-th smallest
//! ticket.

use rand::Rng;

use super::Millis;

/// Names the shuffle and the commitment's layout (see the module).
pub const ALGORITHM: &str = "park-miller-fisher-yates-v1";

/// Seeds are Park–Miller states: 1 to the modulus minus one.
const SEED_RANGE: std::ops::Range<u64> = 1..super::shuffle::MODULUS;

/// A shuffle seed sealed by its commitment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedSeed {
    pub seed: u64,
    /// 32 lowercase hex digits.
    pub salt: String,
    /// [`commitment`] of `seed` and `salt`.
    pub commitment: String,
}

impl SealedSeed {
    /// A random seed and salt.
    pub fn generate() -> Self {
        let mut rng = rand::thread_rng();
        let seed = rng.gen_range(SEED_RANGE);
        Self::new(seed, format!("{:032x}", rng.r#gen::<u128>()))
    }

    pub fn new(seed: u64, salt: String) -> Self {
        SealedSeed {
            commitment: commitment(seed, &salt),
            seed,
            salt,
        }
    }
}

/// The commitment to `seed` with `salt` (see the module).
pub fn commitment(seed: u64, salt: &str) -> String {
    crate::digest::sha256_hex(format!("usher-shuffle-v1:{seed}:{salt}"))
}

/// What a room publishes about its shuffle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fairness {
    pub commitment: String,
    /// Known once the pre-queue was shuffled.
    pub revealed: Option<Revealed>,
}

/// The seed of a shuffle that took place, and what it shuffled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revealed {
    pub seed: u64,
    pub salt: String,
    /// When the room opened and shuffled its pre-queue.
    pub shuffled_at: Millis,
    /// Entries of the join list (the pre-queue at that moment) of each
    /// lane: the general lane's come first.
    pub general: u64,
    pub priority: u64,
}

impl Revealed {
    /// Entries of the join list.
    pub fn joins(&self) -> u64 {
        self.general + self.priority
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commitment_is_sha256_of_the_documented_text() {
        // printf 'usher-shuffle-v1:4242:000102030405060708090a0b0c0d0e0f' | sha256sum
        assert_eq!(
            commitment(4242, "000102030405060708090a0b0c0d0e0f"),
            "bb80d2a144c5f37dc1a84bad59e0d0282ba76eaf2524592f89becdf398807505"
        );
    }

    #[test]
    fn generated_seeds_are_states_with_a_full_salt() {
        for _ in 0..100 {
            let sealed = SealedSeed::generate();
            assert!(SEED_RANGE.contains(&sealed.seed));
            assert_eq!(sealed.salt.len(), 32);
            assert!(sealed.salt.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(sealed.commitment, commitment(sealed.seed, &sealed.salt));
        }
    }
}
