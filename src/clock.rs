//! Wall-clock time as simgate stores and shows it: stored as RFC 3339 UTC with milliseconds,
//! and calendar days as `YYYY-MM-DD` (text in this form sorts as time does, which the index's
//! range filters rely on); shown to people in a configured time zone (`DisplayZone`), ISO
//! 8601 dates, with relative ages where they help.

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

/// The day after a `YYYY-MM-DD` date (an exclusive upper bound for "on or before").
pub fn day_after(day: &str) -> String {
    day.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.tomorrow().ok())
        .map(|d| d.to_string())
        .unwrap_or_else(|| day.to_string())
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

/// The time zone times are shown in (`http.time_zone`; default the machine's).
#[derive(Debug, Clone)]
pub struct DisplayZone {
    /// IANA name ("Europe/Paris"), or "the machine's (NAME)".
    name: String,
    zone: jiff::tz::TimeZone,
}

impl DisplayZone {
    /// The machine's zone (TZ, /etc/localtime), UTC when it cannot be told.
    pub fn system() -> DisplayZone {
        let zone = jiff::tz::TimeZone::system();
        let name = zone.iana_name().unwrap_or("UTC").to_string();
        DisplayZone { name, zone }
    }

    /// An IANA zone name from the system's zone database.
    pub fn named(name: &str) -> Result<DisplayZone, String> {
        jiff::tz::TimeZone::get(name)
            .map(|zone| DisplayZone {
                name: name.to_string(),
                zone,
            })
            .map_err(|e| format!("{name:?} is not a time zone name such as \"Europe/Paris\" ({e})"))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A stored time as "2026-12-01 09:49 CET"; anything that does not parse as received.
    pub fn show(&self, stored: &str) -> String {
        match stored.parse::<jiff::Timestamp>() {
            Ok(time) => {
                let zoned = time.to_zoned(self.zone.clone());
                zoned.strftime("%Y-%m-%d %H:%M %Z").to_string()
            }
            Err(_) => stored.to_string(),
        }
    }

    /// A stored time as "2026-12-01 09:49", for columns whose heading names the zone.
    pub fn show_short(&self, stored: &str) -> String {
        match stored.parse::<jiff::Timestamp>() {
            Ok(time) => time
                .to_zoned(self.zone.clone())
                .strftime("%Y-%m-%d %H:%M")
                .to_string(),
            Err(_) => stored.to_string(),
        }
    }

    /// The calendar day of a stored time in this zone, `YYYY-MM-DD`.
    pub fn day(&self, stored: &str) -> Option<String> {
        let time = stored.parse::<jiff::Timestamp>().ok()?;
        Some(
            time.to_zoned(self.zone.clone())
                .strftime("%Y-%m-%d")
                .to_string(),
        )
    }
}

impl serde::Serialize for DisplayZone {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name)
    }
}

/// How long ago, in a few characters: "4 min", "3 h", "2 d" (`None` when it does not parse).
pub fn age(stored: &str) -> Option<String> {
    let elapsed = elapsed_since(stored)?;
    let minutes = elapsed.as_secs() / 60;
    Some(match minutes {
        0..60 => format!("{minutes} min"),
        60..2880 => format!("{} h", minutes / 60),
        _ => format!("{} d", minutes / 1440),
    })
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

    #[test]
    fn stored_times_show_in_the_configured_zone() {
        let paris = DisplayZone::named("Europe/Paris").expect("zone database");
        assert_eq!(
            paris.show("2026-12-01T08:49:53.891Z"),
            "2026-12-01 09:49 CET"
        );
        assert_eq!(paris.show("2026-07-01T08:49:53Z"), "2026-07-01 10:49 CEST");
        assert_eq!(
            paris.day("2026-12-01T23:30:00Z").as_deref(),
            Some("2026-12-02")
        );
        assert_eq!(paris.show("garbage"), "garbage");
        assert!(DisplayZone::named("Mars/Olympus").is_err());
        assert_eq!(
            age(&rfc3339_before(Duration::from_secs(3 * 3600))).as_deref(),
            Some("3 h")
        );
    }
}
