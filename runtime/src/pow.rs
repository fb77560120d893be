//! Proof of work before joining. The broker hands out challenges that are
//! stateless and signed: `v1.<room>.<expiresAtMs>.<difficulty>.<nonce>.<mac>`.
//! A visitor joins with a counter such that SHA-256(`challenge:counter`)
//! (the counter in decimal) starts with at least `difficulty` zero bits.
//!
//! Checking a solution is a parse, one HMAC, one SHA-256 and a clock
//! comparison: microseconds. Spending it once ([`Spend`], recorded by the
//! store until the challenge expires) is the caller's part.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use crate::auth::MacKeys;
use crate::queue::Millis;

/// How long a challenge may be solved and used.
pub const CHALLENGE_TTL_MS: Millis = 120_000;
/// The hardest difficulty a room may ask (about 2^28 hashes on average).
pub const MAX_DIFFICULTY: u8 = 28;
/// The difficulty of anonymous rooms unless their rules say otherwise: a
/// median solve of 0.3 to 0.9 s in the waiting page (headless Chromium on
/// a shared 2-core server, 1.5 to 3 million hashes a second; phones are a
/// few times slower).
pub const DEFAULT_DIFFICULTY: u8 = 21;

const VERSION: &str = "v1";

/// Why a solution is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("the challenge is not one this waiting room issued")]
    Malformed,
    #[error("the challenge's signature is not valid")]
    Forged,
    #[error("the challenge belongs to another room")]
    WrongRoom,
    #[error("the challenge has expired; fetch a new one")]
    Expired,
    #[error("the challenge is easier than the room now asks ({asked} bits); fetch a new one")]
    TooEasy { asked: u8 },
    #[error("the counter does not solve the challenge")]
    Unsolved,
}

/// A challenge as handed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub text: String,
    pub difficulty: u8,
    pub expires_at: Millis,
}

/// A checked solution: what the store must record as spent, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spend {
    /// The challenge's random nonce (signed, so it names the challenge).
    pub id: String,
    pub expires_at: Millis,
}

/// Issues and checks the challenges of the rooms that share these keys.
#[derive(Clone)]
pub struct Challenges {
    keys: MacKeys,
}

impl Challenges {
    pub fn new(keys: MacKeys) -> Self {
        Challenges { keys }
    }

    /// A new challenge for `room`, valid [`CHALLENGE_TTL_MS`] from `now`.
    pub fn issue(&self, room: &str, difficulty: u8, now: Millis) -> Challenge {
        let mut nonce = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut nonce);
        let expires_at = now + CHALLENGE_TTL_MS;
        let body = format!(
            "{VERSION}.{room}.{expires_at}.{difficulty}.{}",
            URL_SAFE_NO_PAD.encode(nonce)
        );
        let mac = self.keys.sign(&body);
        Challenge {
            text: format!("{body}.{mac}"),
            difficulty,
            expires_at,
        }
    }

    /// Checks that `counter` solves `challenge`, a challenge of `room` at
    /// least as hard as `asked`, not expired at `now`.
    pub fn verify(
        &self,
        challenge: &str,
        counter: u64,
        room: &str,
        asked: u8,
        now: Millis,
    ) -> Result<Spend, ProofError> {
        let (body, mac) = challenge.rsplit_once('.').ok_or(ProofError::Malformed)?;
        let mut fields = body.split('.');
        let (Some(VERSION), Some(of_room), Some(expires_at), Some(difficulty), Some(nonce), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(ProofError::Malformed);
        };
        let expires_at: Millis = expires_at.parse().map_err(|_| ProofError::Malformed)?;
        let difficulty: u8 = difficulty.parse().map_err(|_| ProofError::Malformed)?;
        if !self.keys.verify(body, mac) {
            return Err(ProofError::Forged);
        }
        if of_room != room {
            return Err(ProofError::WrongRoom);
        }
        if now >= expires_at {
            return Err(ProofError::Expired);
        }
        if difficulty < asked {
            return Err(ProofError::TooEasy { asked });
        }
        if leading_zero_bits(&digest(challenge, counter)) < u32::from(difficulty) {
            return Err(ProofError::Unsolved);
        }
        Ok(Spend {
            id: nonce.to_owned(),
            expires_at,
        })
    }
}

/// SHA-256(`challenge:counter`).
fn digest(challenge: &str, counter: u64) -> [u8; 32] {
    Sha256::new()
        .chain_update(challenge)
        .chain_update(b":")
        .chain_update(counter.to_string())
        .finalize()
        .into()
}

fn leading_zero_bits(digest: &[u8]) -> u32 {
    let mut bits = 0;
    for byte in digest {
        bits += byte.leading_zeros();
        if *byte != 0 {
            break;
        }
    }
    bits
}

/// The first counter that solves `challenge` at `difficulty`, as a client
/// finds it (about 2^difficulty hashes).
pub fn solve(challenge: &str, difficulty: u8) -> u64 {
    let prefix = Sha256::new().chain_update(challenge).chain_update(b":");
    (0..u64::MAX)
        .find(|counter| {
            let hash = prefix.clone().chain_update(counter.to_string()).finalize();
            leading_zero_bits(&hash) >= u32::from(difficulty)
        })
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const T0: Millis = 1_800_000_000_000;

    fn challenges() -> Challenges {
        Challenges::new(MacKeys::new([3; 32], vec![]))
    }

    #[test]
    fn a_solution_verifies_once_solved() {
        let challenges = challenges();
        let challenge = challenges.issue("concert", 8, T0);
        assert_eq!(challenge.expires_at, T0 + CHALLENGE_TTL_MS);
        let counter = solve(&challenge.text, 8);
        let spend = challenges
            .verify(&challenge.text, counter, "concert", 8, T0 + 1)
            .unwrap();
        assert_eq!(spend.expires_at, challenge.expires_at);
        assert_eq!(spend.id.len(), 22);
        assert!(challenge.text.contains(&spend.id));
        // A harder challenge than asked is fine; another counter is not.
        assert!(
            challenges
                .verify(&challenge.text, counter, "concert", 4, T0)
                .is_ok()
        );
        let wrong =
            (0..).find(|c| *c != counter && leading_zero_bits(&digest(&challenge.text, *c)) < 8);
        assert_eq!(
            challenges.verify(&challenge.text, wrong.unwrap(), "concert", 8, T0),
            Err(ProofError::Unsolved)
        );
    }

    #[test]
    fn challenges_are_unique_and_bound_to_room_time_and_difficulty() {
        let challenges = challenges();
        let a = challenges.issue("concert", 4, T0);
        assert_ne!(a.text, challenges.issue("concert", 4, T0).text);
        let counter = solve(&a.text, 4);
        let check = |text: &str, room: &str, asked: u8, now: Millis| {
            challenges.verify(text, counter, room, asked, now)
        };
        assert_eq!(check(&a.text, "other", 4, T0), Err(ProofError::WrongRoom));
        assert_eq!(
            check(&a.text, "concert", 4, a.expires_at),
            Err(ProofError::Expired)
        );
        assert_eq!(
            check(&a.text, "concert", 5, T0),
            Err(ProofError::TooEasy { asked: 5 })
        );
        // Editing any signed field breaks the signature.
        let expiry = format!(".{}.", a.expires_at);
        let later = format!(".{}.", a.expires_at + 1);
        for (from, to) in [
            (".concert.", ".other."),
            (expiry.as_str(), later.as_str()),
            (".4.", ".0."),
        ] {
            let edited = a.text.replacen(from, to, 1);
            assert_eq!(
                check(&edited, "other", 0, T0),
                Err(ProofError::Forged),
                "{edited}"
            );
        }
        let foreign = Challenges::new(MacKeys::new([4; 32], vec![])).issue("concert", 4, T0);
        assert_eq!(
            check(&foreign.text, "concert", 4, T0),
            Err(ProofError::Forged)
        );
        // Retired keys still verify, so a key rotation cuts no solver off.
        let rotated = Challenges::new(MacKeys::new([4; 32], vec![[3; 32]]));
        assert!(rotated.verify(&a.text, counter, "concert", 4, T0).is_ok());
    }

    #[test]
    fn malformed_challenges_are_refused() {
        let challenges = challenges();
        let good = challenges.issue("concert", 1, T0).text;
        for bad in [
            String::new(),
            "v1".into(),
            good.replacen("v1.", "v2.", 1),
            good.replacen(".1.", ".x.", 1),
            good.replacen(".1.", ".999.", 1),
            format!("{good}.extra"),
            good.replacen(".concert.", ".", 1),
            "v1.concert.notanumber.1.nonce.mac".into(),
        ] {
            let refused = challenges.verify(&bad, 0, "concert", 0, T0).unwrap_err();
            assert!(
                matches!(refused, ProofError::Malformed | ProofError::Forged),
                "{bad}: {refused:?}"
            );
        }
    }

    #[test]
    fn leading_zero_bits_are_counted_across_bytes() {
        assert_eq!(leading_zero_bits(&[0x80]), 0);
        assert_eq!(leading_zero_bits(&[0x01, 0xff]), 7);
        assert_eq!(leading_zero_bits(&[0, 0, 0x10]), 19);
        assert_eq!(leading_zero_bits(&[0, 0]), 16);
    }

    /// What a verify costs the broker:
    /// `cargo test -p usher-runtime --release --lib pow::tests::verify_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a test"]
    fn verify_cost() {
        let challenges = challenges();
        // One hash whatever the difficulty: a light one solves fast.
        let challenge = challenges.issue("concert-2026", 12, T0);
        let counter = solve(&challenge.text, 12);
        let rounds = 200_000;
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            let spend = challenges.verify(
                std::hint::black_box(&challenge.text),
                std::hint::black_box(counter),
                "concert-2026",
                12,
                T0,
            );
            assert!(std::hint::black_box(spend).is_ok());
        }
        let per_verify = started.elapsed().as_nanos() / rounds;
        println!(
            "verify: {per_verify} ns per solution ({} bytes of challenge)",
            challenge.text.len()
        );
    }
}
