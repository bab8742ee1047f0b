//! When rules are due. Each due time gets a stable id, `<plan>/<rule>/<RFC 3339 time in UTC>`,
//! so that "exactly once per due time" can be had from a create-if-absent of that id in a store,
//! whichever scheduler replica, before or after a restart, gets there first.
//!
//! Due times follow the rule's time zone across daylight saving changes, as cron does: a rule
//! due at a fixed time that falls in the skipped hour (spring forward) is due at the first minute
//! after the gap, while a repeating rule (`15 * * * *`) has no run in the gap; a time in the
//! repeated hour (fall back) is due once, at its first reading.
//!
//! A rule with continuous backup (S3 protection groups) is also due every `check_minutes`, at
//! the multiples of that interval since the Unix epoch (every replica agrees on them): those
//! due times are checks, which sync a bucket only when its pending updates say so; its cron due
//! times stay full runs. A check at a cron due time is that full run.

use chrono::{DateTime, LocalResult, NaiveDateTime, SecondsFormat, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use crate::plan::{Rule, Schedule};

/// One due time of one rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Due {
    pub at: DateTime<Utc>,
    /// `<plan>/<rule>/<at as RFC 3339, UTC, whole seconds>`.
    pub id: String,
    /// A continuous-backup check, not a due time of the rule's cron schedule.
    pub check: bool,
}

/// The id of a rule's run at `at`: the same on every replica and after any restart.
pub fn due_id(plan: &str, rule: &str, at: DateTime<Utc>) -> String {
    format!("{plan}/{rule}/{}", at.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// The first due time strictly after `after` (of the cron schedule, or a continuous check);
/// None for a schedule that is never due again.
pub fn next_due(rule: &Rule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let full = next_after(&rule.schedule, after);
    let check = rule.continuous.as_ref().and_then(|continuous| next_check(continuous.check_minutes, after));
    match (full, check) {
        (Some(full), Some(check)) => Some(full.min(check)),
        (full, check) => full.or(check),
    }
}

/// The first multiple of `minutes` since the Unix epoch strictly after `after`.
fn next_check(minutes: u32, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let step = i64::from(minutes.max(1)) * 60;
    let next = after.timestamp().div_euclid(step).checked_add(1)?.checked_mul(step)?;
    DateTime::from_timestamp(next, 0)
}

/// Whether the rule's due time `at` is a continuous-backup check rather than a run of its cron
/// schedule.
pub fn is_check(rule: &Rule, at: DateTime<Utc>) -> bool {
    rule.continuous.is_some() && next_after(&rule.schedule, at - TimeDelta::seconds(1)) != Some(at)
}

/// How long after `at` the rule's run may still start: its start window, or for a check its
/// interval (a check that could not start before the next one is superseded by it).
pub fn start_window(rule: &Rule, at: DateTime<Utc>) -> TimeDelta {
    match &rule.continuous {
        Some(continuous) if is_check(rule, at) => {
            TimeDelta::minutes(i64::from(continuous.check_minutes.max(1))).min(rule.start_window)
        }
        _ => rule.start_window,
    }
}

/// The due times in `(from, to]`, oldest first: consecutive windows that share their ends see
/// each due time once. The caller bounds the window (an hourly rule has 8,760 due times a year).
pub fn due_between(plan: &str, rule: &Rule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Due> {
    let mut dues = Vec::new();
    let mut after = from;
    while let Some(at) = next_due(rule, after).filter(|at| *at <= to) {
        dues.push(Due { at, id: due_id(plan, &rule.name, at), check: is_check(rule, at) });
        after = at;
    }
    dues
}

/// The cron search runs on local wall-clock time, and two of its answers are stepped over,
/// never returned: from an instant in the second reading of a repeated hour it can find the
/// first reading again, which is earlier than `after`; and on a day with a skipped hour it
/// answers the first minute after the gap whenever its scan crosses the gap, even for a time
/// (01:30 on a day that skips 02:00 to 03:00) that was before it.
pub(crate) fn next_after(schedule: &Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Whole seconds: cron has none, and a due time must not carry `after`'s fraction.
    let mut from = after.with_nanosecond(0).unwrap_or(after).with_timezone(&schedule.time_zone);
    // A repeated hour has at most 60 due minutes to step over, a skipped one a single answer.
    for _ in 0..=61 {
        let candidate = schedule.cron.find_next_occurrence(&from, false).ok()?;
        let candidate_utc = candidate.with_timezone(&Utc);
        if candidate_utc > after
            && (matches(schedule, candidate.naive_local()) || due_in_gap_before(schedule, &candidate))
        {
            return Some(candidate_utc);
        }
        from = candidate;
    }
    None
}

/// Whether the cron expression matches a wall-clock time (whether or not it exists in the zone).
fn matches(schedule: &Schedule, local: NaiveDateTime) -> bool {
    schedule.cron.is_time_matching(&Utc.from_utc_datetime(&local)).unwrap_or(false)
}

/// Whether `candidate` is the first minute after a skipped hour in which the rule was due:
/// some minute of the gap just before it (gaps are at most 2 hours) matches the expression.
fn due_in_gap_before(schedule: &Schedule, candidate: &DateTime<Tz>) -> bool {
    let local = candidate.naive_local();
    (1..=120).map(|minutes| local - TimeDelta::minutes(minutes)).any(|earlier| {
        schedule.time_zone.from_local_datetime(&earlier) == LocalResult::None && matches(schedule, earlier)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(schedule: &str, time_zone: &str) -> Rule {
        let text = format!(
            "name: p\nrules:\n  - name: r\n    schedule: \"{schedule}\"\n    time_zone: {time_zone}\n    \
             selection: {{resource_types: [ebs], regions: [us-east-1], tags: {{include: {{app: web}}}}}}\n    \
             retention: {{days: 7}}\n"
        );
        match crate::load("plan.yaml", &text) {
            Ok(mut plan) => plan.rules.remove(0),
            Err(e) => panic!("{e}: {text}"),
        }
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("an RFC 3339 time")
    }

    #[test]
    fn next_due_reads_the_cron_in_the_rules_time_zone() {
        let rule = rule("0 2 * * *", "Europe/Berlin");
        // Winter: Berlin is UTC+1.
        assert_eq!(next_due(&rule, utc("2026-01-10T12:00:00Z")), Some(utc("2026-01-11T01:00:00Z")));
        // Summer: UTC+2.
        assert_eq!(next_due(&rule, utc("2026-07-10T12:00:00Z")), Some(utc("2026-07-11T00:00:00Z")));
    }

    #[test]
    fn next_due_is_strictly_after_and_ignores_seconds() {
        let rule = rule("0 5 * * *", "UTC");
        assert_eq!(next_due(&rule, utc("2026-03-01T05:00:00Z")), Some(utc("2026-03-02T05:00:00Z")));
        assert_eq!(next_due(&rule, utc("2026-03-01T04:59:59.999Z")), Some(utc("2026-03-01T05:00:00Z")));
    }

    #[test]
    fn a_time_in_the_skipped_hour_is_due_once_right_after_the_gap() {
        // New York springs forward on 2026-03-08 at 02:00 EST to 03:00 EDT: 02:30 does not exist.
        let rule = rule("30 2 * * *", "America/New_York");
        let dues = due_between("p", &rule, utc("2026-03-07T00:00:00Z"), utc("2026-03-10T00:00:00Z"));
        let times: Vec<_> = dues.iter().map(|due| due.at).collect();
        assert_eq!(
            times,
            vec![
                utc("2026-03-07T07:30:00Z"), // 02:30 EST
                utc("2026-03-08T07:00:00Z"), // 03:00 EDT, the first minute after the gap
                utc("2026-03-09T06:30:00Z"), // 02:30 EDT
            ]
        );
    }

    #[test]
    fn a_time_in_the_repeated_hour_is_due_once() {
        // New York falls back on 2026-11-01 at 02:00 EDT to 01:00 EST: 01:30 happens twice.
        let rule = rule("30 1 * * *", "America/New_York");
        let dues = due_between("p", &rule, utc("2026-10-31T00:00:00Z"), utc("2026-11-03T00:00:00Z"));
        let times: Vec<_> = dues.iter().map(|due| due.at).collect();
        assert_eq!(
            times,
            vec![
                utc("2026-10-31T05:30:00Z"), // 01:30 EDT
                utc("2026-11-01T05:30:00Z"), // 01:30 EDT, the first reading only
                utc("2026-11-02T06:30:00Z"), // 01:30 EST
            ]
        );
        // Asked from inside the second reading, the next due time is the next day's.
        assert_eq!(next_due(&rule, utc("2026-11-01T06:10:00Z")), Some(utc("2026-11-02T06:30:00Z")));
    }

    #[test]
    fn hourly_rules_pass_the_repeated_hour_without_going_back() {
        let rule = rule("15 * * * *", "America/New_York");
        let dues = due_between("p", &rule, utc("2026-11-01T04:00:00Z"), utc("2026-11-01T08:00:00Z"));
        let times: Vec<_> = dues.iter().map(|due| due.at).collect();
        assert!(times.windows(2).all(|pair| pair[0] < pair[1]), "{times:?}");
        assert!(times.iter().all(|at| *at > utc("2026-11-01T04:00:00Z") && *at <= utc("2026-11-01T08:00:00Z")));
    }

    #[test]
    fn a_daily_rule_is_due_once_on_every_local_day_of_a_year_with_both_dst_changes() {
        for (schedule, zone) in
            [("30 2 * * *", "America/New_York"), ("30 1 * * *", "America/New_York"), ("0 2 * * *", "Europe/Berlin")]
        {
            let rule = rule(schedule, zone);
            let dues = due_between("p", &rule, utc("2026-01-01T12:00:00Z"), utc("2027-01-01T12:00:00Z"));
            let days: std::collections::BTreeSet<_> =
                dues.iter().map(|due| due.at.with_timezone(&rule.schedule.time_zone).date_naive()).collect();
            assert_eq!((dues.len(), days.len()), (365, 365), "{schedule} in {zone}");
        }
    }

    #[test]
    fn an_hourly_rule_skips_the_skipped_hour_and_runs_the_repeated_one_once() {
        let rule = rule("15 * * * *", "America/New_York");
        let spring = due_between("p", &rule, utc("2026-03-08T05:00:00Z"), utc("2026-03-08T09:00:00Z"));
        let times: Vec<_> = spring.iter().map(|due| due.at).collect();
        // 00:15 and 01:15 EST, no 02:15, then 03:15 and 04:15 EDT.
        assert_eq!(
            times,
            [
                utc("2026-03-08T05:15:00Z"),
                utc("2026-03-08T06:15:00Z"),
                utc("2026-03-08T07:15:00Z"),
                utc("2026-03-08T08:15:00Z")
            ]
        );
    }

    #[test]
    fn due_ids_are_stable_and_windows_sharing_an_end_do_not_repeat_a_due_time() {
        let rule = rule("0 */6 * * *", "UTC");
        let (start, middle, end) =
            (utc("2026-05-01T00:00:00Z"), utc("2026-05-01T12:00:00Z"), utc("2026-05-02T00:00:00Z"));
        let whole = due_between("nightly", &rule, start, end);
        let mut halves = due_between("nightly", &rule, start, middle);
        halves.extend(due_between("nightly", &rule, middle, end));
        assert_eq!(whole, halves);
        let ids: Vec<_> = whole.iter().map(|due| due.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "nightly/r/2026-05-01T06:00:00Z",
                "nightly/r/2026-05-01T12:00:00Z",
                "nightly/r/2026-05-01T18:00:00Z",
                "nightly/r/2026-05-02T00:00:00Z",
            ]
        );
        assert_eq!(due_id("nightly", "r", Utc.with_ymd_and_hms(2026, 5, 1, 6, 0, 0).unwrap()), ids[0]);
    }

    fn continuous_rule(schedule: &str, check_minutes: u32) -> Rule {
        let text = format!(
            "name: p\nvault: {{bucket: the-vault, region: us-west-2}}\nrules:\n  - name: r\n    schedule: \
             \"{schedule}\"\n    selection:\n      resource_types: [s3]\n      protection_groups: [{{name: g, buckets: \
             [{{bucket: assets, region: us-east-1}}]}}]\n    retention: {{days: 7}}\n    continuous: {{check_minutes: \
             {check_minutes}}}\n"
        );
        match crate::load("plan.yaml", &text) {
            Ok(mut plan) => plan.rules.remove(0),
            Err(e) => panic!("{e}: {text}"),
        }
    }

    #[test]
    fn a_continuous_rule_is_due_every_check_interval_between_its_full_runs() {
        let rule = continuous_rule("0 1 * * *", 15);
        let dues = due_between("p", &rule, utc("2026-05-01T00:40:00Z"), utc("2026-05-01T01:50:00Z"));
        let seen: Vec<_> = dues.iter().map(|due| (due.at, due.check)).collect();
        assert_eq!(
            seen,
            [
                (utc("2026-05-01T00:45:00Z"), true),
                (utc("2026-05-01T01:00:00Z"), false), // the cron's full run, not also a check
                (utc("2026-05-01T01:15:00Z"), true),
                (utc("2026-05-01T01:30:00Z"), true),
                (utc("2026-05-01T01:45:00Z"), true),
            ]
        );
        assert_eq!(dues[2].id, "p/r/2026-05-01T01:15:00Z");
        assert_eq!(next_due(&rule, utc("2026-05-01T00:52:10Z")), Some(utc("2026-05-01T01:00:00Z")));
        assert_eq!(next_due(&rule, utc("2026-05-01T01:00:00Z")), Some(utc("2026-05-01T01:15:00Z")));
        // 96 due times a day: 95 checks and the full run.
        let day = due_between("p", &rule, utc("2026-05-01T00:00:00Z"), utc("2026-05-02T00:00:00Z"));
        assert_eq!((day.len(), day.iter().filter(|due| !due.check).count()), (96, 1));
        // A check may start until the next one; a full run has its start window.
        assert_eq!(start_window(&rule, utc("2026-05-01T01:15:00Z")), TimeDelta::minutes(15));
        assert_eq!(start_window(&rule, utc("2026-05-01T01:00:00Z")), rule.start_window);
    }

    #[test]
    fn checks_fall_on_multiples_of_the_interval_since_the_epoch_in_every_time_zone() {
        let rule = continuous_rule("0 2 * * *", 20);
        let dues = due_between("p", &rule, utc("2026-05-01T10:05:00Z"), utc("2026-05-01T11:05:00Z"));
        let times: Vec<_> = dues.iter().map(|due| due.at).collect();
        assert_eq!(times, [utc("2026-05-01T10:20:00Z"), utc("2026-05-01T10:40:00Z"), utc("2026-05-01T11:00:00Z")]);
        assert!(dues.iter().all(|due| due.check && is_check(&rule, due.at)));
        // A rule without continuous backup is due only by its cron.
        let plain = self::rule("0 2 * * *", "UTC");
        assert_eq!(next_due(&plain, utc("2026-05-01T10:05:00Z")), Some(utc("2026-05-02T02:00:00Z")));
        assert!(!is_check(&plain, utc("2026-05-01T10:20:00Z")));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the zone's daylight saving rules (Lord Howe moves by 30 minutes, Santiago at
        /// midnight), a daily rule is due once on each local day, in order.
        #[test]
        fn a_daily_rule_is_due_once_a_local_day_in_any_zone(
            hour in 0u32..24,
            minute in 0u32..60,
            zone in proptest::sample::select(vec!["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "America/Santiago"]),
            start_day in 0i64..365,
        ) {
            let rule = rule(&format!("{minute} {hour} * * *"), zone);
            let from = utc("2026-01-01T00:00:00Z") + TimeDelta::days(start_day);
            let dues = due_between("p", &rule, from, from + TimeDelta::days(120));
            let days: Vec<_> = dues.iter().map(|due| due.at.with_timezone(&rule.schedule.time_zone).date_naive()).collect();
            proptest::prop_assert!(days.windows(2).all(|pair| pair[1] == pair[0].succ_opt().expect("a next day")), "{:?}", dues);
            proptest::prop_assert!((119..=121).contains(&dues.len()), "{}", dues.len());
        }
    }
}
