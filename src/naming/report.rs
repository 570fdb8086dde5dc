//! The G-code report: counts of G9318, G9319 and G9320 per group and the conformance rate,
//! from facts the index gathers. Pure arithmetic; dates arrive as text.

use std::collections::BTreeMap;

use serde::Serialize;

use super::StudyStatus;

/// How the report groups studies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportGrouping {
    /// By the month (`YYYY-MM`, UTC) the study was first received.
    Month,
    /// By the Station Name of its first series that has one.
    Station,
    /// By who documented the latest reason (only studies with status reason-documented).
    Physician,
}

impl ReportGrouping {
    pub fn parse(text: &str) -> Option<ReportGrouping> {
        match text {
            "month" => Some(ReportGrouping::Month),
            "station" => Some(ReportGrouping::Station),
            "physician" => Some(ReportGrouping::Physician),
            _ => None,
        }
    }
}

/// Which day a study counts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportDate {
    /// Its Study Date (0008,0020); the day it was first received when it has none.
    Study,
    /// The day (UTC) it was first received.
    Received,
}

impl ReportDate {
    pub fn parse(text: &str) -> Option<ReportDate> {
        match text {
            "study" => Some(ReportDate::Study),
            "received" => Some(ReportDate::Received),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReportDate::Study => "study",
            ReportDate::Received => "received",
        }
    }

    /// The day (`YYYY-MM-DD`) a study counts on.
    pub fn day_of(self, study_date: &str, first_received_at: &str) -> String {
        let received = first_received_at[..first_received_at.len().min(10)].to_string();
        match self {
            ReportDate::Study
                if study_date.len() == 8 && study_date.bytes().all(|b| b.is_ascii_digit()) =>
            {
                format!(
                    "{}-{}-{}",
                    &study_date[..4],
                    &study_date[4..6],
                    &study_date[6..]
                )
            }
            _ => received,
        }
    }
}

/// What the report needs of one judged study.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportFact {
    /// RFC 3339 UTC.
    pub first_received_at: String,
    /// Study Date as received (DA), possibly empty.
    pub study_date: String,
    pub status: StudyStatus,
    pub station_name: Option<String>,
    /// Who documented the latest reason, if any.
    pub documented_by: Option<String>,
}

/// One group of the report.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ReportRow {
    pub group: String,
    pub g9318: u64,
    pub g9319: u64,
    pub g9320: u64,
    pub total: u64,
    /// G9318 / (G9318 + G9319), 0..=1: studies with a documented reason (G9320) are
    /// denominator exceptions. `None` when there is no G9318 or G9319 study.
    pub conformance_rate: Option<f64>,
}

/// Counts studies first received in `from ..= to` (days `YYYY-MM-DD`), grouped; the groups in
/// order, then a row `total`.
pub fn report(
    facts: impl IntoIterator<Item = ReportFact>,
    from: &str,
    to: &str,
    grouping: ReportGrouping,
    dates: ReportDate,
) -> Vec<ReportRow> {
    let mut groups: BTreeMap<String, ReportRow> = BTreeMap::new();
    let mut total = ReportRow {
        group: "total".into(),
        ..ReportRow::default()
    };
    for fact in facts {
        let day = dates.day_of(&fact.study_date, &fact.first_received_at);
        if day.as_str() < from || day.as_str() > to {
            continue;
        }
        // By physician, only studies with a documented reason have a group; the others are
        // in the total alone (a group of them would show a conformance rate nobody owns).
        let group = match grouping {
            ReportGrouping::Month => Some(day[..day.len().min(7)].to_string()),
            ReportGrouping::Station => Some(
                fact.station_name
                    .clone()
                    .unwrap_or_else(|| "(no station)".into()),
            ),
            ReportGrouping::Physician => match &fact.documented_by {
                Some(by) if fact.status == StudyStatus::ReasonDocumented => Some(by.clone()),
                _ => None,
            },
        };
        let mut rows = vec![&mut total];
        if let Some(group) = group {
            rows.push(groups.entry(group.clone()).or_insert_with(|| ReportRow {
                group,
                ..ReportRow::default()
            }));
        }
        for row in rows {
            match fact.status {
                StudyStatus::Conforming => row.g9318 += 1,
                StudyStatus::NeedsReason => row.g9319 += 1,
                StudyStatus::ReasonDocumented => row.g9320 += 1,
            }
            row.total += 1;
        }
    }
    let mut rows: Vec<ReportRow> = groups.into_values().collect();
    rows.push(total);
    for row in &mut rows {
        row.conformance_rate = conformance_rate(row.g9318, row.g9319);
    }
    rows
}

/// One nonstandard name as a root-cause fact: where it came from and what it is nearest to.
#[derive(Debug, Clone, PartialEq)]
pub struct NameFact {
    /// `study` or `series`.
    pub kind: &'static str,
    pub name: String,
    pub station: String,
    pub protocol: String,
    pub calling_ae_title: String,
    /// The nearest standard name (study) or series kinds (series); may be empty.
    pub nearest: String,
    pub first_received_at: String,
    pub study_date: String,
}

/// A nonstandard name that keeps coming from one place: fix it there once.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RootCause {
    pub kind: &'static str,
    pub name: String,
    pub station: String,
    pub protocol: String,
    pub calling_ae_title: String,
    /// Studies with this name from this place.
    pub count: u64,
    pub nearest: String,
}

/// The most frequent nonstandard names per (kind, name, station, protocol, calling AE) in
/// the days, most frequent first, at most `limit`.
pub fn root_causes(
    facts: impl IntoIterator<Item = NameFact>,
    from: &str,
    to: &str,
    dates: ReportDate,
    limit: usize,
) -> Vec<RootCause> {
    let mut groups: BTreeMap<(&'static str, String, String, String, String), RootCause> =
        BTreeMap::new();
    for fact in facts {
        let day = dates.day_of(&fact.study_date, &fact.first_received_at);
        if day.as_str() < from || day.as_str() > to {
            continue;
        }
        let key = (
            fact.kind,
            fact.name.clone(),
            fact.station.clone(),
            fact.protocol.clone(),
            fact.calling_ae_title.clone(),
        );
        let cause = groups.entry(key).or_insert_with(|| RootCause {
            kind: fact.kind,
            name: fact.name,
            station: fact.station,
            protocol: fact.protocol,
            calling_ae_title: fact.calling_ae_title,
            count: 0,
            nearest: fact.nearest.clone(),
        });
        cause.count += 1;
        if cause.nearest.is_empty() {
            cause.nearest = fact.nearest;
        }
    }
    let mut causes: Vec<RootCause> = groups.into_values().collect();
    // Stable: equal counts keep the key order (kind, name, station...).
    causes.sort_by_key(|c| std::cmp::Reverse(c.count));
    causes.truncate(limit);
    causes
}

/// G9318 / (G9318 + G9319), rounded to three places; `None` with an empty denominator.
pub fn conformance_rate(g9318: u64, g9319: u64) -> Option<f64> {
    let denominator = g9318 + g9319;
    (denominator > 0).then(|| (g9318 as f64 / denominator as f64 * 1000.0).round() / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(day: &str, status: StudyStatus, station: &str, by: Option<&str>) -> ReportFact {
        ReportFact {
            first_received_at: format!("{day}T10:00:00.000Z"),
            study_date: String::new(),
            status,
            station_name: (!station.is_empty()).then(|| station.to_string()),
            documented_by: by.map(str::to_string),
        }
    }

    fn check(grouping: ReportGrouping, expected: &[(&str, u64, u64, u64, Option<f64>)]) {
        use StudyStatus::*;
        let facts = [
            fact("2026-10-31", Conforming, "SIM1", None),
            fact("2026-11-01", Conforming, "SIM1", None),
            fact("2026-11-02", NeedsReason, "SIM2", None),
            fact("2026-11-03", ReasonDocumented, "SIM2", Some("dr b")),
            fact("2026-12-01", NeedsReason, "", Some("dr a")),
            fact("2026-12-02", Conforming, "SIM1", None),
        ];
        let rows = report(
            facts,
            "2026-11-01",
            "2026-12-01",
            grouping,
            ReportDate::Received,
        );
        let got: Vec<_> = rows
            .iter()
            .map(|r| {
                assert_eq!(r.total, r.g9318 + r.g9319 + r.g9320);
                (
                    r.group.as_str(),
                    r.g9318,
                    r.g9319,
                    r.g9320,
                    r.conformance_rate,
                )
            })
            .collect();
        assert_eq!(got, expected, "{grouping:?}");
    }

    #[test]
    fn the_report_counts_each_code_per_group_within_the_days() {
        check(
            ReportGrouping::Month,
            &[
                ("2026-11", 1, 1, 1, Some(0.5)),
                ("2026-12", 0, 1, 0, Some(0.0)),
                ("total", 1, 2, 1, Some(0.333)),
            ],
        );
        check(
            ReportGrouping::Station,
            &[
                ("(no station)", 0, 1, 0, Some(0.0)),
                ("SIM1", 1, 0, 0, Some(1.0)),
                ("SIM2", 0, 1, 1, Some(0.0)),
                ("total", 1, 2, 1, Some(0.333)),
            ],
        );
        check(
            ReportGrouping::Physician,
            &[("dr b", 0, 0, 1, None), ("total", 1, 2, 1, Some(0.333))],
        );
    }

    #[test]
    fn studies_count_on_their_study_date_unless_asked_otherwise() {
        let mut scanned_earlier = fact("2026-12-01", StudyStatus::NeedsReason, "SIM1", None);
        scanned_earlier.study_date = "20261130".into();
        let without_date = fact("2026-12-01", StudyStatus::Conforming, "SIM1", None);
        let facts = vec![scanned_earlier, without_date];
        let by_study = report(
            facts.clone(),
            "2026-11-30",
            "2026-11-30",
            ReportGrouping::Month,
            ReportDate::Study,
        );
        assert_eq!(by_study.last().map(|r| (r.g9318, r.g9319)), Some((0, 1)));
        let by_received = report(
            facts,
            "2026-11-30",
            "2026-11-30",
            ReportGrouping::Month,
            ReportDate::Received,
        );
        assert_eq!(by_received.last().map(|r| r.total), Some(0));
    }

    #[test]
    fn root_causes_count_each_name_per_place_most_frequent_first() {
        let name = |name: &str, station: &str, day: &str| NameFact {
            kind: "study",
            name: name.into(),
            station: station.into(),
            protocol: "LUNG 4D".into(),
            calling_ae_title: "CTSIM".into(),
            nearest: "CT Treatment Planning".into(),
            first_received_at: format!("{day}T08:00:00Z"),
            study_date: String::new(),
        };
        let facts = vec![
            name("4DCT LUNG SIM", "SIM1", "2026-11-02"),
            name("4DCT LUNG SIM", "SIM1", "2026-11-03"),
            name("4DCT LUNG SIM", "SIM2", "2026-11-03"),
            name("BREAST", "SIM1", "2026-11-04"),
            name("4DCT LUNG SIM", "SIM1", "2026-10-01"),
        ];
        let causes = root_causes(facts, "2026-11-01", "2026-11-30", ReportDate::Received, 10);
        let got: Vec<(&str, &str, u64)> = causes
            .iter()
            .map(|c| (c.name.as_str(), c.station.as_str(), c.count))
            .collect();
        assert_eq!(
            got,
            [
                ("4DCT LUNG SIM", "SIM1", 2),
                ("4DCT LUNG SIM", "SIM2", 1),
                ("BREAST", "SIM1", 1)
            ]
        );
    }
}
