//! Log hygiene: warnings that a flood would repeat thousands of times are written at most
//! once per interval, with how many were left out.

use std::time::{Duration, Instant};

/// Says when a repeated warning may be written again.
#[derive(Debug)]
pub struct RateLimitedWarning {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedWarning {
    pub fn new(every: Duration) -> RateLimitedWarning {
        RateLimitedWarning {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(left out since the last one)` when the warning may be written now.
    pub fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_one_line_per_interval_with_a_count() {
        let mut warning = RateLimitedWarning::new(Duration::from_secs(60));
        assert_eq!(warning.ready(), Some(0));
        assert_eq!(warning.ready(), None);
        assert_eq!(warning.ready(), None);
        warning.last = Some(Instant::now() - Duration::from_secs(61));
        assert_eq!(warning.ready(), Some(2));
    }
}
