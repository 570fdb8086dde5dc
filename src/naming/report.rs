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

/// What the report needs of one judged study.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportFact {
    /// RFC 3339 UTC.
    pub first_received_at: String,
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
) -> Vec<ReportRow> {
    let mut groups: BTreeMap<String, ReportRow> = BTreeMap::new();
    let mut total = ReportRow {
        group: "total".into(),
        ..ReportRow::default()
    };
    for fact in facts {
        let day = &fact.first_received_at[..fact.first_received_at.len().min(10)];
        if day < from || day > to {
            continue;
        }
        let group = match grouping {
            ReportGrouping::Month => day[..day.len().min(7)].to_string(),
            ReportGrouping::Station => fact
                .station_name
                .clone()
                .unwrap_or_else(|| "(no station)".into()),
            ReportGrouping::Physician => match &fact.documented_by {
                Some(by) if fact.status == StudyStatus::ReasonDocumented => by.clone(),
                _ => "(no reason documented)".into(),
            },
        };
        for row in [
            groups.entry(group.clone()).or_insert_with(|| ReportRow {
                group,
                ..ReportRow::default()
            }),
            &mut total,
        ] {
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
        let rows = report(facts, "2026-11-01", "2026-12-01", grouping);
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
            &[
                ("(no reason documented)", 1, 2, 0, Some(0.333)),
                ("dr b", 0, 0, 1, None),
                ("total", 1, 2, 1, Some(0.333)),
            ],
        );
    }
}
