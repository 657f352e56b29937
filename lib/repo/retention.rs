//! The retention policy of `bk-index forget`, as a pure function of
//! snapshot times (no I/O), so it can be tested on synthetic times.
//!
//! The semantics are restic's, applied to one group of snapshots (same host
//! and same set of roots) at a time, with calendar buckets in **UTC** (the
//! time in a snapshot's name):
//!
//! - `last N`: the N newest snapshots;
//! - `hourly/daily/weekly/monthly/yearly N`: walking from the newest to the
//!   oldest, the newest snapshot of each of the last N hours/days/ISO
//!   weeks/months/years that have a snapshot (periods without one do not
//!   count);
//! - `within D`: every snapshot less than D older than the group's newest.
//!
//! A snapshot kept by any rule is kept; the others are removed.

use crate::sys::time::{civil_from_days, days_from_civil};
use std::time::Duration;

/// Names the calendar period (bucket) of a time in µs.
type Label = fn(i64) -> String;

/// How many snapshots to keep by each rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the N newest.
    pub last: u32,
    /// Keep the newest of each of the last N hours with a snapshot.
    pub hourly: u32,
    /// … days.
    pub daily: u32,
    /// … ISO weeks (Monday to Sunday).
    pub weekly: u32,
    /// … months.
    pub monthly: u32,
    /// … years.
    pub yearly: u32,
    /// Keep everything less than this older than the newest.
    pub within: Option<Duration>,
}

impl Policy {
    /// True when no rule keeps anything (refused: it would remove all).
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within.is_none_or(|d| d.is_zero())
    }

    /// For each snapshot time (microseconds since the epoch, UTC), the
    /// reasons it is kept, e.g. `["last", "daily 2025-01-03"]`; an empty
    /// list means it goes. Ties keep the later one in `times` as newer.
    pub fn apply(&self, times: &[i64]) -> Vec<Vec<String>> {
        let mut reasons = vec![Vec::new(); times.len()];
        let mut order: Vec<usize> = (0..times.len()).collect();
        // Newest first; among equal times the later index counts as newer.
        order.sort_by(|&a, &b| times[b].cmp(&times[a]).then(b.cmp(&a)));
        let Some(&newest) = order.first() else {
            return reasons;
        };
        let rules: [(u32, &str, Label); 5] = [
            (self.hourly, "hourly", hour_label),
            (self.daily, "daily", day_label),
            (self.weekly, "weekly", week_label),
            (self.monthly, "monthly", month_label),
            (self.yearly, "yearly", year_label),
        ];
        for (rank, &i) in order.iter().enumerate() {
            if (rank as u64) < u64::from(self.last) {
                reasons[i].push("last".to_owned());
            }
        }
        for (count, name, label) in rules {
            let mut kept = 0u32;
            let mut last_bucket: Option<String> = None;
            for &i in &order {
                if kept >= count {
                    break;
                }
                let bucket = label(times[i]);
                if last_bucket.as_deref() != Some(bucket.as_str()) {
                    reasons[i].push(format!("{name} {bucket}"));
                    kept += 1;
                    last_bucket = Some(bucket);
                }
            }
        }
        if let Some(within) = self.within.filter(|d| !d.is_zero()) {
            let limit = i64::try_from(within.as_micros()).unwrap_or(i64::MAX);
            for &i in &order {
                if times[newest].saturating_sub(times[i]) < limit {
                    reasons[i].push(format!("within {}", humantime::format_duration(within)));
                }
            }
        }
        reasons
    }
}

fn split(us: i64) -> (i64, i64) {
    let secs = us.div_euclid(1_000_000);
    (secs.div_euclid(86_400), secs.rem_euclid(86_400))
}

fn hour_label(us: i64) -> String {
    let (days, secs) = split(us);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}", secs / 3600)
}

fn day_label(us: i64) -> String {
    let (y, m, d) = civil_from_days(split(us).0);
    format!("{y:04}-{m:02}-{d:02}")
}

fn week_label(us: i64) -> String {
    let (y, w) = iso_week(split(us).0);
    format!("{y:04}-W{w:02}")
}

fn month_label(us: i64) -> String {
    let (y, m, _) = civil_from_days(split(us).0);
    format!("{y:04}-{m:02}")
}

fn year_label(us: i64) -> String {
    let (y, _, _) = civil_from_days(split(us).0);
    format!("{y:04}")
}

/// ISO 8601 week-numbering year and week of a day (days since 1970-01-01).
fn iso_week(days: i64) -> (i64, i64) {
    // 1970-01-01 was a Thursday; Monday = 0.
    let weekday = (days + 3).rem_euclid(7);
    let thursday = days - weekday + 3;
    let (year, _, _) = civil_from_days(thursday);
    let week = (thursday - days_from_civil(year, 1, 1)) / 7 + 1;
    (year, week)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// µs of a UTC time "YYYY-MM-DD HH:MM".
    fn t(s: &str) -> i64 {
        let name = format!(
            "{}{}{}T{}{}00.000000Z-000000000011223344556677.pgp",
            &s[0..4],
            &s[5..7],
            &s[8..10],
            &s[11..13],
            &s[14..16]
        );
        crate::repo::snapshot_name::SnapshotName::parse(&name)
            .unwrap()
            .micros()
    }

    /// The times kept by `policy`, as the input strings.
    fn kept(policy: &Policy, times: &[&str]) -> Vec<String> {
        let us: Vec<i64> = times.iter().map(|s| t(s)).collect();
        let reasons = policy.apply(&us);
        times
            .iter()
            .zip(reasons)
            .filter(|(_, r)| !r.is_empty())
            .map(|(s, _)| (*s).to_owned())
            .collect()
    }

    fn days(n: u64) -> Duration {
        Duration::from_secs(n * 86_400)
    }

    #[test]
    fn calendar_labels() {
        assert_eq!(day_label(t("2024-02-29 23:59")), "2024-02-29");
        assert_eq!(hour_label(t("2024-02-29 23:59")), "2024-02-29T23");
        // ISO weeks across year ends.
        assert_eq!(week_label(t("2021-01-03 12:00")), "2020-W53");
        assert_eq!(week_label(t("2021-01-04 00:00")), "2021-W01");
        assert_eq!(week_label(t("2024-12-30 00:00")), "2025-W01");
        assert_eq!(week_label(t("2025-06-15 00:00")), "2025-W24");
        assert_eq!(month_label(t("1999-12-31 23:00")), "1999-12");
        assert_eq!(year_label(t("2000-01-01 00:00")), "2000");
    }

    #[test]
    fn empty_policy_and_empty_input() {
        assert!(Policy::default().is_empty());
        assert!(Policy {
            within: Some(Duration::ZERO),
            ..Policy::default()
        }
        .is_empty());
        let p = Policy {
            last: 3,
            ..Policy::default()
        };
        assert!(!p.is_empty());
        assert!(p.apply(&[]).is_empty());
    }

    #[test]
    fn keep_last() {
        let p = Policy {
            last: 2,
            ..Policy::default()
        };
        // Input order does not matter, only times.
        let times = [
            "2025-01-02 00:00",
            "2025-01-04 00:00",
            "2025-01-01 00:00",
            "2025-01-03 00:00",
        ];
        assert_eq!(kept(&p, &times), ["2025-01-04 00:00", "2025-01-03 00:00"]);
    }

    #[test]
    fn keep_daily_takes_newest_of_each_day_and_skips_empty_days() {
        let p = Policy {
            daily: 3,
            ..Policy::default()
        };
        let times = [
            "2025-01-01 08:00",
            "2025-01-01 20:00",
            "2025-01-03 09:00",
            "2025-01-03 10:00",
            "2025-01-05 07:00",
            "2025-01-06 07:00",
            "2025-01-06 23:00",
        ];
        // Days with snapshots, newest first: 06, 05, 03 (01 is the fourth).
        assert_eq!(
            kept(&p, &times),
            ["2025-01-03 10:00", "2025-01-05 07:00", "2025-01-06 23:00"]
        );
        let us: Vec<i64> = times.iter().map(|s| t(s)).collect();
        assert_eq!(p.apply(&us)[6], ["daily 2025-01-06"]);
    }

    #[test]
    fn keep_hourly() {
        let p = Policy {
            hourly: 2,
            ..Policy::default()
        };
        let times = ["2025-01-01 10:05", "2025-01-01 10:55", "2025-01-01 12:00"];
        assert_eq!(kept(&p, &times), ["2025-01-01 10:55", "2025-01-01 12:00"]);
    }

    #[test]
    fn keep_weekly_uses_iso_weeks() {
        let p = Policy {
            weekly: 2,
            ..Policy::default()
        };
        // Sun 2025-01-05 ends W01; Mon 2025-01-06 starts W02.
        let times = [
            "2024-12-30 10:00", // Mon, 2025-W01
            "2025-01-05 10:00", // Sun, 2025-W01
            "2025-01-06 10:00", // Mon, 2025-W02
            "2025-01-12 10:00", // Sun, 2025-W02
            "2024-12-29 10:00", // Sun, 2024-W52
        ];
        assert_eq!(kept(&p, &times), ["2025-01-05 10:00", "2025-01-12 10:00"]);
    }

    #[test]
    fn keep_monthly_and_yearly() {
        let times = [
            "2023-06-01 00:00",
            "2023-12-31 23:00",
            "2024-01-15 00:00",
            "2024-01-31 00:00",
            "2024-03-01 00:00",
        ];
        let monthly = Policy {
            monthly: 2,
            ..Policy::default()
        };
        assert_eq!(
            kept(&monthly, &times),
            ["2024-01-31 00:00", "2024-03-01 00:00"]
        );
        let yearly = Policy {
            yearly: 5,
            ..Policy::default()
        };
        assert_eq!(
            kept(&yearly, &times),
            ["2023-12-31 23:00", "2024-03-01 00:00"]
        );
    }

    #[test]
    fn keep_within_is_relative_to_the_newest() {
        let p = Policy {
            within: Some(days(2)),
            ..Policy::default()
        };
        let times = [
            "2025-01-01 00:00",
            "2025-01-08 00:01",
            "2025-01-09 00:00",
            "2025-01-10 00:00",
        ];
        // Newest is 01-10 00:00; strictly less than 2 days older: 01-08 00:01 on.
        assert_eq!(
            kept(&p, &times),
            ["2025-01-08 00:01", "2025-01-09 00:00", "2025-01-10 00:00"]
        );
    }

    #[test]
    fn rules_combine_as_a_union() {
        let p = Policy {
            last: 1,
            daily: 2,
            weekly: 2,
            monthly: 1,
            ..Policy::default()
        };
        let times = [
            "2024-12-20 10:00", // W51: the 2nd weekly
            "2024-12-30 10:00", // W01 (2025), older than the 01-01 ones
            "2025-01-01 09:00",
            "2025-01-01 10:00", // daily 01-01
            "2025-01-02 10:00", // last, daily 01-02, weekly W01, monthly 2025-01
        ];
        assert_eq!(
            kept(&p, &times),
            ["2024-12-20 10:00", "2025-01-01 10:00", "2025-01-02 10:00"]
        );
        let us: Vec<i64> = times.iter().map(|s| t(s)).collect();
        let r = p.apply(&us);
        assert_eq!(
            r[4],
            [
                "last",
                "daily 2025-01-02",
                "weekly 2025-W01",
                "monthly 2025-01"
            ]
        );
        assert_eq!(r[0], ["weekly 2024-W51"]);
        assert!(r[1].is_empty() && r[2].is_empty());
    }

    #[test]
    fn equal_times_count_once_per_bucket() {
        let p = Policy {
            daily: 1,
            ..Policy::default()
        };
        let us = [t("2025-01-01 10:00"), t("2025-01-01 10:00")];
        let r = p.apply(&us);
        assert!(r[0].is_empty());
        assert_eq!(r[1], ["daily 2025-01-01"]);
    }
}
