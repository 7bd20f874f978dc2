//! When to try a control-plane request again, and how long to wait first.
//!
//! Why this module exists: E2B's API asks clients to retry some answers and not others
//! (e2b-compat.md §1.1), and the official SDK (2.63, `e2b/retry.py`) fixes the rules: a
//! `Should-Retry` header is authoritative (`true` retries, anything else never does);
//! without it 429, 502, 503 and 504 are retried; `Retry-After` (delta seconds) gives the
//! wait, else an exponential backoff from 0.1 s to 10 s with jitter. The rules are pure
//! functions here so they are tested without a server; [`super::Client`] applies them.

use std::time::Duration;

/// Statuses retried when the answer carries no `Should-Retry` header.
pub const RETRYABLE_STATUSES: [u16; 4] = [429, 502, 503, 504];
/// The first backoff step.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The longest backoff step.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// The jittered wait is at least this share of the backoff step.
const JITTER_MIN: f64 = 0.5;

/// How a client retries: how often, and the longest `Retry-After` it waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (the SDK's default is 3).
    pub max_retries: u32,
    /// A longer `Retry-After` is waited for only this long.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            max_retry_after: Duration::from_secs(10),
        }
    }
}

/// Reads `Retry-After` as the SDK does: delta seconds, at most ten ASCII digits; an HTTP
/// date or anything else is ignored (`None`).
pub fn parse_retry_after(value: Option<&str>) -> Option<u64> {
    let v = value?.trim();
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// Whether an answer asks to be retried: `Should-Retry` decides when present (only
/// `true`, case-insensitive, retries); without it, the statuses of [`RETRYABLE_STATUSES`].
pub fn should_retry(status: u16, should_retry_header: Option<&str>) -> bool {
    match should_retry_header {
        Some(v) => v.trim().eq_ignore_ascii_case("true"),
        None => RETRYABLE_STATUSES.contains(&status),
    }
}

/// The backoff step before retry number `attempt + 1` (`attempt` 0 is the first retry):
/// `min(0.1 s · 2^attempt, 10 s)`, scaled by `jitter` in [0, 1) to between half of it and
/// all of it.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let step = BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(attempt.min(31)))
        .min(BACKOFF_MAX);
    let jitter = jitter.clamp(0.0, 1.0);
    step.mul_f64(JITTER_MIN + jitter * (1.0 - JITTER_MIN))
}

/// The wait before retrying an answer with `status` and these headers, or `None` when it
/// must not be retried (not retryable, or no retries left after `attempt` retries).
pub fn retry_delay(
    policy: &RetryPolicy,
    attempt: u32,
    status: u16,
    should_retry_header: Option<&str>,
    retry_after_header: Option<&str>,
    jitter: f64,
) -> Option<Duration> {
    if attempt >= policy.max_retries || !should_retry(status, should_retry_header) {
        return None;
    }
    Some(match parse_retry_after(retry_after_header) {
        Some(secs) => Duration::from_secs(secs).min(policy.max_retry_after),
        None => backoff(attempt, jitter),
    })
}

/// The wait before retrying after a connection failure (no answer at all), or `None`
/// when no retries are left.
pub fn connection_retry_delay(policy: &RetryPolicy, attempt: u32, jitter: f64) -> Option<Duration> {
    (attempt < policy.max_retries).then(|| backoff(attempt, jitter))
}

/// A uniform number in [0, 1) from the kernel's random source, for jitter.
pub fn jitter() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_values() {
        assert_eq!(parse_retry_after(Some("3")), Some(3));
        assert_eq!(parse_retry_after(Some(" 10 ")), Some(10));
        assert_eq!(parse_retry_after(Some("0")), Some(0));
        assert_eq!(parse_retry_after(Some("9999999999")), Some(9_999_999_999));
        for bad in [
            "",
            "-1",
            "1.5",
            "12345678901",
            "Wed, 21 Oct 2026 07:28:00 GMT",
            "٣",
        ] {
            assert_eq!(parse_retry_after(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(parse_retry_after(None), None);
    }

    #[test]
    fn which_answers_are_retried() {
        for s in [429, 502, 503, 504] {
            assert!(should_retry(s, None), "{s}");
        }
        for s in [200, 400, 401, 404, 409, 500, 501] {
            assert!(!should_retry(s, None), "{s}");
        }
        // The header is authoritative, both ways.
        assert!(should_retry(500, Some("true")));
        assert!(should_retry(409, Some(" TRUE ")));
        assert!(!should_retry(503, Some("false")));
        assert!(!should_retry(429, Some("no")));
        assert!(!should_retry(429, Some("")));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(0, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(1, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(2, 1.0), Duration::from_millis(400));
        assert_eq!(backoff(7, 1.0), Duration::from_secs(10));
        assert_eq!(backoff(40, 1.0), Duration::from_secs(10));
        assert_eq!(backoff(40, 0.0), Duration::from_secs(5));
        for a in 0..12 {
            let d = backoff(a, jitter());
            assert!(d >= Duration::from_millis(50) && d <= BACKOFF_MAX, "{d:?}");
        }
    }

    #[test]
    fn delays_follow_the_policy() {
        let p = RetryPolicy::default();
        assert_eq!(
            retry_delay(&p, 0, 429, None, Some("2"), 0.5),
            Some(Duration::from_secs(2))
        );
        // A long Retry-After is capped.
        assert_eq!(
            retry_delay(&p, 0, 503, None, Some("3600"), 0.5),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            retry_delay(&p, 1, 502, None, None, 1.0),
            Some(Duration::from_millis(200))
        );
        // Retry-After alone does not make an answer retryable.
        assert_eq!(retry_delay(&p, 0, 400, None, Some("1"), 0.5), None);
        assert_eq!(retry_delay(&p, 0, 503, Some("false"), Some("1"), 0.5), None);
        assert!(retry_delay(&p, 0, 500, Some("true"), None, 0.5).is_some());
        // Three retries, then the answer stands.
        assert!(retry_delay(&p, 2, 429, None, None, 0.5).is_some());
        assert_eq!(retry_delay(&p, 3, 429, None, None, 0.5), None);
        let none = RetryPolicy {
            max_retries: 0,
            ..p
        };
        assert_eq!(retry_delay(&none, 0, 429, None, None, 0.5), None);
        assert!(connection_retry_delay(&p, 2, 0.5).is_some());
        assert_eq!(connection_retry_delay(&p, 3, 0.5), None);
    }

    #[test]
    fn jitter_is_in_range() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
