//! A per-connection token bucket for chat messages: `rate` tokens per
//! second up to `burst`. Eight bytes per connection; time comes from the
//! worker's coarse millisecond clock.

/// Tokens and the time they were last topped up.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f32,
    last_ms: u32,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: u32, now_ms: u32) -> TokenBucket {
        TokenBucket { tokens: burst as f32, last_ms: now_ms }
    }

    /// Takes a token if there is one.
    pub fn try_take(&mut self, now_ms: u32, rate: f64, burst: u32) -> bool {
        let elapsed = now_ms.wrapping_sub(self.last_ms) as f64 / 1000.0;
        self.last_ms = now_ms;
        self.tokens = (self.tokens as f64 + elapsed * rate).min(burst as f64) as f32;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_the_rate() {
        let mut b = TokenBucket::new(5, 0);
        assert_eq!((0..10).filter(|_| b.try_take(0, 2.0, 5)).count(), 5);
        assert!(!b.try_take(400, 2.0, 5), "0.8 tokens after 400 ms");
        assert!(b.try_take(500, 2.0, 5), "1 token after 500 ms");
        // A long pause refills only up to the burst.
        assert_eq!((0..10).filter(|_| b.try_take(60_000, 2.0, 5)).count(), 5);
    }
}
