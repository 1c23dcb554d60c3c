//! The global rate limit: every request, retries included, takes the next free slot of a fixed
//! cadence, so the marketplace never sees more than `max_requests_per_sec`.

use std::sync::Mutex;
use std::time::Duration;

use marketflow_core::sync::lock;
use tokio::time::Instant;

/// The longest spacing kept: a slower rate is taken as one request a day. Far below any sane
/// setting, and small enough that a slot plus it never overflows an `Instant` (a rate of 1e-19
/// from a robots.txt or a typo would otherwise panic there).
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// Spaces requests at least `1 / rate` apart across every task sharing it.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// A limiter of `per_sec` requests a second; zero, negative or non-finite means unlimited,
    /// and a rate below one a day is one a day ([`MAX_INTERVAL`]).
    pub fn new(per_sec: f64) -> Self {
        let interval = if per_sec.is_finite() && per_sec > 0.0 {
            Duration::try_from_secs_f64(1.0 / per_sec)
                .unwrap_or(MAX_INTERVAL)
                .min(MAX_INTERVAL)
        } else {
            Duration::ZERO
        };
        Self {
            interval,
            next: Mutex::new(None),
        }
    }

    /// The spacing between two requests.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Waits for this caller's slot.
    pub async fn acquire(&self) {
        if self.interval.is_zero() {
            return;
        }
        let slot = {
            // A poisoned lock only means another task panicked mid-update of an Instant: the
            // value is still a valid slot.
            let mut next = lock(&self.next);
            let now = Instant::now();
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_by_the_rate() {
        let limiter = Arc::new(RateLimiter::new(10.0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let limiter = Arc::clone(&limiter);
            tasks.push(tokio::spawn(async move {
                limiter.acquire().await;
                Instant::now()
            }));
        }
        let mut times = Vec::new();
        for task in tasks {
            times.push(task.await.unwrap() - start);
        }
        times.sort();
        // 20 requests at 10/s: the first at once, the last 1.9 s later.
        assert_eq!(times[0], Duration::ZERO);
        assert_eq!(times[19], Duration::from_millis(1900));
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(99), "{times:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_limiter_does_not_bank_a_burst() {
        let limiter = RateLimiter::new(2.0);
        limiter.acquire().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let start = Instant::now();
        limiter.acquire().await;
        limiter.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_means_unlimited() {
        let limiter = RateLimiter::new(0.0);
        let start = Instant::now();
        for _ in 0..100 {
            limiter.acquire().await;
        }
        assert_eq!(Instant::now(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_too_small_to_represent_is_one_request_a_day() {
        for per_sec in [1e-30, 1e-19, 1e-6, f64::MIN_POSITIVE] {
            let limiter = RateLimiter::new(per_sec);
            assert_eq!(limiter.interval(), MAX_INTERVAL, "{per_sec}");
            let start = Instant::now();
            limiter.acquire().await;
            limiter.acquire().await;
            assert_eq!(Instant::now() - start, MAX_INTERVAL, "{per_sec}");
        }
    }
}
