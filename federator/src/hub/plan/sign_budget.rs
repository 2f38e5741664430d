//! How often the hub signs for one member: a token bucket per member, so that a compromised
//! member cannot make the hub sign without end. Every CSR an agent publishes for the current
//! generation with a new digest is a new CA to sign (an agent that lost its key legitimately
//! publishes a second one), and with the Vault backend each is an issuance in Vault.
//!
//! A member may have [`BURST`] CAs signed at once and one more every [`REFILL`]: far above
//! any honest rate (one per renewal, rotation or re-issue, and the hub's own retries after a
//! crash), and a bound on a flood of thousands of CSRs. No I/O here.

use std::time::Duration;

use time::OffsetDateTime;

/// Signatures a member may have at once.
pub const BURST: u32 = 10;
/// One more signature becomes available this often.
pub const REFILL: Duration = Duration::from_secs(6);

/// One member's bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    tokens: f64,
    at: OffsetDateTime,
}

impl Budget {
    /// A full bucket at `now`.
    pub fn full(now: OffsetDateTime) -> Self {
        Self {
            tokens: f64::from(BURST),
            at: now,
        }
    }

    /// Whether a signature is available at `now`, or how long until one is. Only a CA the
    /// hub signs is [spent](Budget::spend): a refused CSR or a failed signer costs nothing.
    pub fn check(&mut self, now: OffsetDateTime) -> Result<(), Duration> {
        let elapsed = (now - self.at).max(time::Duration::ZERO).as_seconds_f64();
        self.tokens = (self.tokens + elapsed / REFILL.as_secs_f64()).min(f64::from(BURST));
        self.at = now.max(self.at);
        if self.tokens >= 1.0 {
            Ok(())
        } else {
            Err(REFILL.mul_f64(1.0 - self.tokens))
        }
    }

    /// Records a signature (after [`Budget::check`] allowed it).
    pub fn spend(&mut self) {
        self.tokens = (self.tokens - 1.0).max(0.0);
    }

    /// [`Budget::check`], then [`Budget::spend`].
    #[cfg(test)]
    fn take(&mut self, now: OffsetDateTime) -> Result<(), Duration> {
        self.check(now)?;
        self.spend();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_refill() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let mut b = Budget::full(t0);
        for i in 0..BURST {
            assert_eq!(b.take(t0), Ok(()), "signature {i} of the burst");
        }
        let wait = b.take(t0).unwrap_err();
        assert_eq!(wait, REFILL);
        // Half a refill later: still nothing, and half the wait left.
        let half = t0 + REFILL / 2;
        let left = b.take(half).unwrap_err();
        assert!(left <= REFILL / 2 + Duration::from_millis(1), "{left:?}");
        assert_eq!(b.take(t0 + REFILL), Ok(()));
        assert!(b.take(t0 + REFILL).is_err());
    }

    #[test]
    fn it_refills_up_to_the_burst_only() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let mut b = Budget::full(t0);
        for _ in 0..BURST {
            b.take(t0).unwrap();
        }
        let later = t0 + REFILL * 1000;
        for _ in 0..BURST {
            assert_eq!(b.take(later), Ok(()));
        }
        assert!(b.take(later).is_err());
    }

    #[test]
    fn checking_costs_nothing() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let mut b = Budget::full(t0);
        for _ in 0..100 {
            b.check(t0).unwrap();
        }
        for _ in 0..BURST {
            b.take(t0).unwrap();
        }
        assert!(b.check(t0).is_err());
    }

    #[test]
    fn a_clock_going_back_gives_nothing() {
        let t0 = OffsetDateTime::UNIX_EPOCH + REFILL * 100;
        let mut b = Budget::full(t0);
        for _ in 0..BURST {
            b.take(t0).unwrap();
        }
        assert!(b.take(t0 - REFILL * 50).is_err());
        assert!(b.take(t0).is_err());
    }
}
