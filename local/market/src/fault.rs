//! Per-request faults: each product or list request draws from a seeded stream (the n-th request
//! the n-th draw), so a retry draws again and eventually gets the real page.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::generate::mix;

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally.
    None,
    /// 429 with `Retry-After: 1`.
    TooManyRequests,
    /// 500.
    ServerError,
    /// Close the connection without an answer.
    Reset,
}

/// The shares of requests per fault.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultRates {
    /// Share answered 429.
    pub too_many_requests: f64,
    /// Share answered 500.
    pub server_error: f64,
    /// Share closed without an answer.
    pub reset: f64,
}

/// A source of fault draws.
#[derive(Debug)]
pub struct Faults {
    seed: u64,
    rates: FaultRates,
    drawn: AtomicU64,
}

impl Faults {
    /// Draws from `seed` at `rates`; their sum above 1 means every request faults.
    pub fn new(seed: u64, rates: FaultRates) -> Self {
        Self {
            seed: mix(seed ^ 0xFA17),
            rates,
            drawn: AtomicU64::new(0),
        }
    }

    /// The next request's fault.
    pub fn draw(&self) -> Fault {
        let r = self.rates;
        if r.too_many_requests + r.server_error + r.reset <= 0.0 {
            return Fault::None;
        }
        let n = self.drawn.fetch_add(1, Ordering::Relaxed);
        // 53 random bits as a float in [0, 1).
        #[allow(clippy::cast_precision_loss)]
        let u = (mix(self.seed ^ mix(n)) >> 11) as f64 / (1u64 << 53) as f64;
        if u < r.too_many_requests {
            Fault::TooManyRequests
        } else if u < r.too_many_requests + r.server_error {
            Fault::ServerError
        } else if u < r.too_many_requests + r.server_error + r.reset {
            Fault::Reset
        } else {
            Fault::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_land_at_their_rates_and_repeat_with_the_seed() {
        let rates = FaultRates {
            too_many_requests: 0.1,
            server_error: 0.05,
            reset: 0.02,
        };
        let a = Faults::new(1, rates);
        let b = Faults::new(1, rates);
        let draws: Vec<Fault> = (0..20_000).map(|_| a.draw()).collect();
        assert!(draws.iter().all(|&f| f == b.draw()));
        let share = |fault| draws.iter().filter(|&&f| f == fault).count() as f64 / 20_000.0;
        assert!((0.09..0.11).contains(&share(Fault::TooManyRequests)));
        assert!((0.04..0.06).contains(&share(Fault::ServerError)));
        assert!((0.01..0.03).contains(&share(Fault::Reset)));
    }

    #[test]
    fn no_rates_no_faults() {
        let faults = Faults::new(1, FaultRates::default());
        assert!((0..1_000).all(|_| faults.draw() == Fault::None));
    }
}
