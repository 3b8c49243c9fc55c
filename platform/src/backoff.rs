//! The one backoff rule of every retry in the product: exponential from a
//! base, capped, with jitter so that callers which failed together do not
//! retry together. Built on `backon`; the saga keeps its attempts in its
//! store, so it asks for the delay of attempt *n* ([`Backoff::delay`]),
//! while in-memory retries run a `backon` retry with [`Backoff::builder`].
//!
//! Each delay lies in `[d, 2d)` where `d = min(base · 2ⁿ, cap) / 2`
//! ("equal jitter"): never more than the cap, never less than half of it
//! once the cap is reached.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Exponential backoff with jitter: `base` for the first retry, doubling,
/// at most `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first retry's delay (before jitter).
    pub base: Duration,
    /// No delay is longer.
    pub cap: Duration,
}

/// Doublings past which every delay is at the cap anyway (2⁴⁰ × 1 ns is
/// already 18 minutes): keeps [`Backoff::delay`] cheap for long outages.
const MAX_DOUBLINGS: usize = 40;

impl Backoff {
    /// Backoff from `base`, capped at `cap`.
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap }
    }

    /// A `backon` builder with this rule and no limit on attempts; bound
    /// it with `with_max_times` where a retry must give up.
    pub fn builder(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.base / 2)
            .with_max_delay(self.cap.max(self.base) / 2)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
    }

    /// The delay before retry number `attempt` (0 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let nth = (attempt as usize).min(MAX_DOUBLINGS);
        self.builder().build().nth(nth).unwrap_or(self.cap).min(self.cap.max(self.base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_the_base_stay_under_the_cap_and_are_jittered() {
        let b = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        for attempt in 0..8 {
            let d = (200u64 << attempt).min(30_000) / 2;
            let delay = b.delay(attempt).as_millis() as u64;
            assert!((d..2 * d).contains(&delay), "attempt {attempt}: {delay} ms not in [{d}, {})", 2 * d);
        }
        for attempt in [20, 1_000, u32::MAX] {
            let delay = b.delay(attempt);
            assert!(delay >= Duration::from_secs(15) && delay < Duration::from_secs(30), "{delay:?}");
        }
        let spread: std::collections::HashSet<_> = (0..20).map(|_| b.delay(5)).collect();
        assert!(spread.len() > 1, "jitter: every delay was the same");
    }
}
