//! When to try again: exponential backoff with full jitter, `Retry-After`, and a gate that
//! bounds the calls in flight.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Exponential backoff with "full jitter": the wait before retry `k` (from 0) is uniform in
/// `[0, min(max, base · 2^k)]`, so that many clients throttled at once do not come back in step.
/// The random source is seeded (from the role and URL), so a run is reproducible.
#[derive(Debug)]
pub(crate) struct Backoff {
    base_ms: u64,
    max_ms: u64,
    rng: Mutex<StdRng>,
}

impl Backoff {
    /// A backoff of `base_ms · 2^k` capped at `max_ms`, jittered by a generator seeded with `seed`.
    pub(crate) fn new(base_ms: u64, max_ms: u64, seed: u64) -> Self {
        Self {
            base_ms,
            max_ms,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    /// The ceiling of the wait before retry `retry` (from 0), milliseconds.
    pub(crate) fn ceiling_ms(&self, retry: usize) -> u64 {
        let factor = 1u64.checked_shl(retry.min(63) as u32).unwrap_or(u64::MAX);
        self.base_ms.saturating_mul(factor).min(self.max_ms)
    }

    /// The wait before retry `retry` (from 0).
    pub(crate) fn delay(&self, retry: usize) -> Duration {
        let ceiling = self.ceiling_ms(retry);
        let ms = self
            .rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .random_range(0..=ceiling);
        Duration::from_millis(ms)
    }
}

/// A `Retry-After` header value in seconds (`"3"`, `"1.5"`); `None` for an HTTP date or garbage,
/// which fall back to the backoff.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// A counting semaphore: at most `limit` holders at once, shared by every thread calling one
/// client, so the bound holds however the calls are spread over threads.
#[derive(Debug)]
pub(crate) struct Gate {
    limit: usize,
    in_use: Mutex<usize>,
    freed: Condvar,
}

/// A held place in a [`Gate`], given back on drop.
pub(crate) struct Permit<'a>(&'a Gate);

impl Gate {
    /// A gate letting `limit` (at least 1) holders in at once.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            in_use: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Waits for a free place and takes it.
    pub(crate) fn enter(&self) -> Permit<'_> {
        let mut in_use = self.in_use.lock().unwrap_or_else(PoisonError::into_inner);
        while *in_use >= self.limit {
            in_use = self
                .freed
                .wait(in_use)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *in_use += 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut in_use = self.0.in_use.lock().unwrap_or_else(PoisonError::into_inner);
        *in_use -= 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_stays_under_it() {
        let b = Backoff::new(100, 1000, 7);
        assert_eq!(
            (0..6).map(|k| b.ceiling_ms(k)).collect::<Vec<_>>(),
            vec![100, 200, 400, 800, 1000, 1000]
        );
        assert_eq!(b.ceiling_ms(500), 1000, "no overflow on huge retry counts");
        for k in 0..20 {
            assert!(b.delay(k) <= Duration::from_millis(b.ceiling_ms(k)));
        }
        // seeded: the same waits for the same seed
        let (x, y) = (Backoff::new(100, 1000, 3), Backoff::new(100, 1000, 3));
        let draws = |b: &Backoff| (0..8).map(|k| b.delay(k)).collect::<Vec<_>>();
        assert_eq!(draws(&x), draws(&y));
    }

    #[test]
    fn retry_after_reads_seconds_only() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn gate_bounds_holders() {
        let gate = Gate::new(2);
        let (now, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| {
                    let _p = gate.enter();
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    now.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        let peak = peak.load(Ordering::SeqCst);
        assert!((1..=2).contains(&peak), "{peak} holders at once");
    }
}
