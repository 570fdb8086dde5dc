//! Wall-clock time as simgate stores and shows it: RFC 3339 UTC with milliseconds, and
//! calendar days as `YYYY-MM-DD`. Text in this form sorts as time does, which the index's
//! range filters rely on.

use std::time::{Duration, SystemTime};

/// Now, as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// `delay` from now, as RFC 3339 UTC with milliseconds.
pub fn rfc3339_after(delay: Duration) -> String {
    humantime::format_rfc3339_millis(SystemTime::now() + delay).to_string()
}

/// `delay` ago, as RFC 3339 UTC with milliseconds.
pub fn rfc3339_before(delay: Duration) -> String {
    humantime::format_rfc3339_millis(SystemTime::now() - delay).to_string()
}

/// Today in UTC as `YYYY-MM-DD`.
pub fn today() -> String {
    now_rfc3339()[..10].to_string()
}

/// The day `days` before today (UTC) as `YYYY-MM-DD`.
pub fn days_ago(days: u64) -> String {
    rfc3339_before(Duration::from_secs(days * 86_400))[..10].to_string()
}

/// Whether `text` is a calendar date written `YYYY-MM-DD`.
pub fn is_date(text: &str) -> bool {
    text.len() == 10 && humantime::parse_rfc3339_weak(&format!("{text}T00:00:00")).is_ok()
}

/// How long ago an RFC 3339 time was; `None` when it does not parse or lies ahead.
pub fn elapsed_since(time: &str) -> Option<Duration> {
    let then = humantime::parse_rfc3339_weak(time).ok()?;
    SystemTime::now().duration_since(then).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_checked_and_times_sort_as_text() {
        assert!(is_date("2026-12-01"));
        for bad in [
            "2026-13-01",
            "2026-12-1",
            "yesterday",
            "",
            "2026-12-01T00:00:00",
        ] {
            assert!(!is_date(bad), "{bad:?}");
        }
        assert!(rfc3339_before(Duration::from_secs(60)) < now_rfc3339());
        assert!(now_rfc3339() < rfc3339_after(Duration::from_secs(60)));
        assert!(elapsed_since(&rfc3339_before(Duration::from_secs(120))).is_some());
        assert_eq!(elapsed_since("not a time"), None);
    }
}
