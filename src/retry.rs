//! Capped exponential backoff with jitter, for loops that retry a failing dependency
//! (the relay against the broker, the worker against the broker and Postgres).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The first pause after a failure.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(50);

/// Pauses that double from [`BACKOFF_INITIAL`] up to a cap, with ±25 % jitter so
/// that many retrying tasks do not hit a recovering dependency in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    /// A backoff whose pauses never exceed `cap`.
    pub fn new(cap: Duration) -> Self {
        Self { next: BACKOFF_INITIAL.min(cap), cap }
    }

    /// The next pause; each call doubles the following one up to the cap.
    pub fn next_pause(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.cap);
        let jitter = 0.75 + fastrand::f64() * 0.5;
        base.mul_f64(jitter).min(self.cap)
    }

    /// Back to the first pause, after a success.
    pub fn reset(&mut self) {
        self.next = BACKOFF_INITIAL.min(self.cap);
    }
}

/// Sleeps for `pause` unless `stop` fires first; returns `false` when stopped.
pub async fn sleep_unless_stopped(pause: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(pause) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_the_cap_and_reset() {
        let cap = Duration::from_millis(400);
        let mut backoff = Backoff::new(cap);
        let first = backoff.next_pause();
        assert!(first <= BACKOFF_INITIAL.mul_f64(1.25));
        for _ in 0..10 {
            assert!(backoff.next_pause() <= cap);
        }
        assert!(backoff.next_pause() >= cap.mul_f64(0.75));
        backoff.reset();
        assert!(backoff.next_pause() <= BACKOFF_INITIAL.mul_f64(1.25));
    }
}
