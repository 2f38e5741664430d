//! RSA key generation, at least as fast as OpenSSL's on the machines federator runs on.
//!
//! The construction is the `rsa` crate's own two-prime one (random primes of half the modulus
//! size with their top two bits set, `e` = 65537, the key built and validated by
//! [`rsa::RsaPrivateKey::from_p_q`]), and primality is decided by the same test it uses
//! (`num_bigint_dig::prime::probably_prime` with 20 rounds: Miller-Rabin plus a strong Lucas
//! test, i.e. Baillie-PSW). Two things differ, and neither can let a composite through:
//!
//! * **The sieve.** The crate rejects only candidates divisible by a prime up to 53 before a
//!   Miller-Rabin round, so about one candidate in seven reaches a modular exponentiation. Here
//!   a random odd start is followed by a window of odd candidates sieved by every prime below
//!   2^16 (OpenSSL's incremental search works the same way), so only about one in twenty does.
//!   The sieve only skips candidates with a small factor; whatever it lets through still has to
//!   pass the full test.
//! * **Two threads.** `p` and `q` are independent; each is searched on its own thread.
//!
//! Randomness comes from the operating system (`OsRng`) for every start.

use std::sync::OnceLock;

use num_bigint_dig::prime::probably_prime;
use rsa::BigUint;
use rsa::rand_core::{OsRng, RngCore};

use crate::error::{Error, Result};

/// The public exponent, as everywhere (and as `rsa::RsaPrivateKey::new` uses).
const PUBLIC_EXPONENT: u32 = 65_537;
/// Rounds of `probably_prime`, as the `rsa` crate's prime generation uses.
const PRIME_ROUNDS: usize = 20;
/// Odd candidates sieved after each random start. The average gap between primes of 1024 to
/// 2048 bits is 710 to 1420, so a window holds a prime almost always; if not, a new start.
const WINDOW: usize = 4096;
/// The sieve's primes are those below this.
const SIEVE_LIMIT: u32 = 1 << 16;

/// Generates an RSA private key with a `bits`-bit modulus (a multiple of 16, at least 1024).
pub(crate) fn generate(bits: usize) -> Result<rsa::RsaPrivateKey> {
    if bits < 1024 || !bits.is_multiple_of(16) {
        return Err(Error::Key(format!(
            "RSA modulus of {bits} bits: use a multiple of 16 of at least 1024"
        )));
    }
    let half = bits / 2;
    loop {
        let (p, q) = std::thread::scope(|s| {
            let other = s.spawn(|| random_prime(half));
            let p = random_prime(half);
            (p, other.join())
        });
        let q = q.map_err(|_| Error::Key("RSA prime search thread panicked".into()))?;
        // Both have their top two bits set, so the product has exactly `bits` bits; checked
        // anyway, as the crate does. Equal primes or a p - 1 sharing a factor with e: retry
        // (from_p_q refuses both).
        if p == q || (&p * &q).bits() != bits {
            continue;
        }
        if let Ok(key) = rsa::RsaPrivateKey::from_p_q(p, q, BigUint::from(PUBLIC_EXPONENT)) {
            return Ok(key);
        }
    }
}

/// A random probable prime of exactly `bits` bits (a multiple of 8) with its top two bits set.
fn random_prime(bits: usize) -> BigUint {
    let mut bytes = vec![0u8; bits / 8];
    loop {
        OsRng.fill_bytes(&mut bytes);
        bytes[0] |= 0b1100_0000;
        if let Some(last) = bytes.last_mut() {
            *last |= 1;
        }
        let start = BigUint::from_bytes_be(&bytes);
        let sieved = sieve(&start);
        for (i, composite) in sieved.iter().enumerate() {
            if *composite {
                continue;
            }
            let candidate = &start + BigUint::from(2 * i);
            if candidate.bits() != bits {
                break;
            }
            if probably_prime(&candidate, PRIME_ROUNDS) {
                return candidate;
            }
        }
    }
}

/// For the odd `start`, whether `start + 2i` has a factor among the sieve's primes, for every
/// `i` below [`WINDOW`]. (`start` is far larger than those primes, so a factor means composite.)
fn sieve(start: &BigUint) -> Vec<bool> {
    let mut composite = vec![false; WINDOW];
    for &p in small_primes() {
        let r = residue(start, p);
        // The first i with start + 2i ≡ 0 (mod p): i ≡ -r · 2⁻¹, and 2⁻¹ = (p + 1) / 2.
        let first = (u64::from(p - r) % u64::from(p)) * u64::from(p.div_ceil(2)) % u64::from(p);
        let mut i = first as usize;
        while i < WINDOW {
            composite[i] = true;
            i += p as usize;
        }
    }
    composite
}

/// `n mod p` for a small `p`.
fn residue(n: &BigUint, p: u32) -> u32 {
    let r = (n % BigUint::from(p)).to_bytes_le();
    // Below p, so at most four bytes.
    let mut le = [0u8; 4];
    for (d, s) in le.iter_mut().zip(&r) {
        *d = *s;
    }
    u32::from_le_bytes(le)
}

/// The odd primes below [`SIEVE_LIMIT`], by the sieve of Eratosthenes, computed once.
fn small_primes() -> &'static [u32] {
    static PRIMES: OnceLock<Vec<u32>> = OnceLock::new();
    PRIMES.get_or_init(|| {
        let limit = SIEVE_LIMIT as usize;
        let mut is_composite = vec![false; limit];
        let mut primes = Vec::new();
        for n in 3..limit {
            if n % 2 == 0 || is_composite[n] {
                continue;
            }
            primes.push(n as u32);
            let mut m = n * n;
            while m < limit {
                is_composite[m] = true;
                m += 2 * n;
            }
        }
        primes
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};

    #[test]
    fn the_small_primes_are_the_odd_primes_below_the_limit() {
        let primes = small_primes();
        assert_eq!(primes.first(), Some(&3));
        assert_eq!(primes.last(), Some(&65_521), "the largest prime below 2^16");
        // π(2^16) = 6542, and 2 is not in the list.
        assert_eq!(primes.len(), 6541);
        for &p in primes.iter().take(200) {
            assert!((2..p).take_while(|d| d * d <= p).all(|d| p % d != 0), "{p}");
        }
    }

    #[test]
    fn the_sieve_marks_exactly_the_candidates_with_a_small_factor() {
        let mut bytes = [0u8; 128];
        OsRng.fill_bytes(&mut bytes);
        bytes[127] |= 1;
        let start = BigUint::from_bytes_be(&bytes);
        let marked = sieve(&start);
        for (i, m) in marked.iter().enumerate().step_by(61) {
            let candidate = &start + BigUint::from(2 * i);
            let has_factor = small_primes().iter().any(|&p| residue(&candidate, p) == 0);
            assert_eq!(*m, has_factor, "start + {}", 2 * i);
        }
        // Roughly the density Mertens' theorem predicts survives (≈ 1.12 / ln 2^16 · 2 ≈ 0.1).
        let survivors = marked.iter().filter(|m| !**m).count();
        assert!((200..700).contains(&survivors), "{survivors} of {WINDOW}");
    }

    #[test]
    fn a_generated_key_has_two_distinct_primes_of_half_the_size_and_validates() {
        let key = generate(2048).unwrap();
        assert_eq!(key.n().bits(), 2048);
        assert_eq!(key.e(), &BigUint::from(PUBLIC_EXPONENT));
        let primes = key.primes();
        assert_eq!(primes.len(), 2);
        assert_ne!(primes[0], primes[1]);
        for p in primes {
            assert_eq!(p.bits(), 1024);
            assert!(probably_prime(p, PRIME_ROUNDS));
        }
        assert_eq!(&(&primes[0] * &primes[1]), key.n());
        key.validate().unwrap();
    }

    #[test]
    fn sizes_that_are_not_whole_half_bytes_are_refused() {
        assert!(generate(1000).is_err());
        assert!(generate(512).is_err());
    }
}
