//! How long recovery points live: the expiry of a `days` rule, the points a
//! grandfather-father-son (`keep`) rule keeps, and whether a lock lets a point be deleted.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;

use crate::plan::{Keep, Lock, LockMode, Retention};

/// The calendar period (day, ISO week, month or year) a local date falls in, as a sortable key.
type PeriodOf = fn(NaiveDate) -> (i32, u32);

/// When a point of a `days` rule expires (the `lifeboat:expires-at` tag). None for `keep`
/// rules, whose points expire when newer points push them out of every tier (see `Keep::keep`).
pub fn expires_at(retention: &Retention, created_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match retention {
        Retention::Days(days) => created_at.checked_add_signed(TimeDelta::days((*days).into())),
        Retention::Keep(_) => None,
    }
}

impl Keep {
    /// The ids of the points to keep: for each tier, the newest point of each of the last N
    /// calendar days, ISO weeks, months and years (in `time_zone`) that have points. Counting
    /// periods with points, not calendar periods back from `now`, means a rule whose backups
    /// stop failing keeps its last points instead of expiring all of them.
    ///
    /// The newest point is always kept. Points created after `now` (a clock ahead of the
    /// sweep's) are kept and count in no tier. Ties in creation time go to the larger id, so the
    /// answer does not depend on the order of `points`.
    pub fn keep<I: Ord + Clone>(
        &self,
        time_zone: Tz,
        points: &[(I, DateTime<Utc>)],
        now: DateTime<Utc>,
    ) -> BTreeSet<I> {
        let (future, past): (Vec<_>, Vec<_>) = points.iter().partition(|(_, created_at)| *created_at > now);
        let mut kept: BTreeSet<I> = future.into_iter().map(|(id, _)| id.clone()).collect();
        let local_date = |created_at: &DateTime<Utc>| created_at.with_timezone(&time_zone).date_naive();
        let tiers: [(u32, PeriodOf); 4] = [
            (self.daily, |date| (date.year(), date.ordinal())),
            (self.weekly, |date| (date.iso_week().year(), date.iso_week().week())),
            (self.monthly, |date| (date.year(), date.month())),
            (self.yearly, |date| (date.year(), 0)),
        ];
        for (count, period) in tiers {
            // The newest point of each period, then the newest `count` periods.
            let mut newest: BTreeMap<(i32, u32), (&DateTime<Utc>, &I)> = BTreeMap::new();
            for (id, created_at) in &past {
                let entry = newest.entry(period(local_date(created_at))).or_insert((created_at, id));
                if (created_at, id) > (entry.0, entry.1) {
                    *entry = (created_at, id);
                }
            }
            kept.extend(newest.values().rev().take(count as usize).map(|(_, id)| (*id).clone()));
        }
        if let Some((id, _)) = past.iter().max_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0))) {
            kept.insert(id.clone());
        }
        kept
    }
}

/// Why a locked point may not be deleted yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeleteRefusal {
    #[error("under a COMPLIANCE lock until {until}: nobody may delete it before")]
    Compliance { until: DateTime<Utc> },
    #[error("under a GOVERNANCE lock {}: deleting it takes the governance override", .until.map_or("with no end".to_string(), |until| format!("until {until}")))]
    Governance { until: Option<DateTime<Utc>> },
}

/// Whether a point created at `created_at` may be deleted at `now`. COMPLIANCE: never before
/// its minimum retention, override or not. GOVERNANCE: before its minimum retention (or, with
/// none, ever) only with `governance_override`, which the caller logs. NONE: always.
pub fn may_delete(
    lock: &Lock,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
    governance_override: bool,
) -> Result<(), DeleteRefusal> {
    let until = lock
        .min_retention_days
        .map(|days| created_at.checked_add_signed(TimeDelta::days(days.into())).unwrap_or(DateTime::<Utc>::MAX_UTC));
    let protected = until.is_none_or(|until| now < until);
    match lock.mode {
        LockMode::None => Ok(()),
        LockMode::Compliance => match until {
            // Validation requires a minimum with COMPLIANCE; without one the lock holds forever.
            Some(until) if now < until => Err(DeleteRefusal::Compliance { until }),
            Some(_) => Ok(()),
            None => Err(DeleteRefusal::Compliance { until: DateTime::<Utc>::MAX_UTC }),
        },
        LockMode::Governance if protected && !governance_override => Err(DeleteRefusal::Governance { until }),
        LockMode::Governance => Ok(()),
    }
}

/// Which of `points` (id, creation time) a rule's `retention` and `lock` let go at `now`, for
/// recovery points that carry no tags of their own (an S3 vault's indexes): `(expired, held)`,
/// where `held` are expired points the lock keeps (no governance override: this runs unattended).
/// The newest point always stays; a retention of no days and no keep counts keeps everything.
pub fn expired_points<I: Ord + Clone>(
    retention: &lifeboat_proto::Retention,
    lock: Option<&lifeboat_proto::RecoveryLock>,
    points: &[(I, DateTime<Utc>)],
    now: DateTime<Utc>,
) -> (Vec<I>, Vec<I>) {
    let newest = points.iter().max_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0))).map(|(id, _)| id.clone());
    let over: Vec<&(I, DateTime<Utc>)> = if retention.days > 0 {
        let days = TimeDelta::days(retention.days.into());
        points.iter().filter(|(_, at)| at.checked_add_signed(days).is_some_and(|end| end <= now)).collect()
    } else if retention.keep_daily + retention.keep_weekly + retention.keep_monthly + retention.keep_yearly > 0 {
        let keep = Keep {
            daily: retention.keep_daily,
            weekly: retention.keep_weekly,
            monthly: retention.keep_monthly,
            yearly: retention.keep_yearly,
        };
        // A time zone this build cannot read keeps everything: never guess a point away.
        let Ok(zone) = (if retention.time_zone.is_empty() { Ok(chrono_tz::UTC) } else { retention.time_zone.parse() })
        else {
            return (Vec::new(), Vec::new());
        };
        let kept = keep.keep(zone, points, now);
        points.iter().filter(|(id, _)| !kept.contains(id)).collect()
    } else {
        Vec::new()
    };
    let lock = lock.map(|lock| Lock {
        mode: match lock.mode.as_str() {
            "" | "NONE" => LockMode::None,
            "GOVERNANCE" => LockMode::Governance,
            _ => LockMode::Compliance,
        },
        min_retention_days: (lock.min_retention_days > 0).then_some(lock.min_retention_days),
        max_retention_days: None,
        snapshot_lock: false,
    });
    let (mut expired, mut held) = (Vec::new(), Vec::new());
    for (id, at) in over.into_iter().filter(|(id, _)| Some(id) != newest.as_ref()) {
        match &lock {
            Some(lock) if may_delete(lock, *at, now, false).is_err() => held.push(id.clone()),
            _ => expired.push(id.clone()),
        }
    }
    (expired, held)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("an RFC 3339 time")
    }

    fn lock(mode: LockMode, min: Option<u32>) -> Lock {
        Lock { mode, min_retention_days: min, max_retention_days: None, snapshot_lock: false }
    }

    #[test]
    fn days_expire_after_their_count_and_keep_has_no_fixed_expiry() {
        let created = utc("2026-02-27T10:00:00Z");
        assert_eq!(expires_at(&Retention::Days(2), created), Some(utc("2026-03-01T10:00:00Z")));
        assert_eq!(expires_at(&Retention::Keep(Keep { daily: 7, ..Keep::default() }), created), None);
    }

    #[test]
    fn compliance_refuses_before_min_retention_even_with_the_override() {
        let lock = lock(LockMode::Compliance, Some(30));
        let created = utc("2026-01-01T00:00:00Z");
        let refusal = may_delete(&lock, created, utc("2026-01-30T23:59:59Z"), true);
        assert_eq!(refusal, Err(DeleteRefusal::Compliance { until: utc("2026-01-31T00:00:00Z") }));
        assert_eq!(may_delete(&lock, created, utc("2026-01-31T00:00:00Z"), false), Ok(()));
    }

    #[test]
    fn governance_takes_the_override_before_min_retention() {
        let lock = lock(LockMode::Governance, Some(10));
        let created = utc("2026-01-01T00:00:00Z");
        let early = utc("2026-01-05T00:00:00Z");
        assert_eq!(
            may_delete(&lock, created, early, false),
            Err(DeleteRefusal::Governance { until: Some(utc("2026-01-11T00:00:00Z")) })
        );
        assert_eq!(may_delete(&lock, created, early, true), Ok(()));
        assert_eq!(may_delete(&lock, created, utc("2026-01-11T00:00:00Z"), false), Ok(()));
        let open_ended = self::lock(LockMode::Governance, None);
        let refusal = may_delete(&open_ended, created, utc("2030-01-01T00:00:00Z"), false);
        assert!(refusal.unwrap_err().to_string().contains("governance override"));
    }

    #[test]
    fn no_lock_always_allows() {
        let created = utc("2026-01-01T00:00:00Z");
        assert_eq!(may_delete(&lock(LockMode::None, None), created, created, false), Ok(()));
    }

    #[test]
    fn gfs_keeps_the_newest_of_each_day_week_and_month() {
        // One point at 01:00 and one at 13:00 UTC every day of January to March 2026.
        let start = utc("2026-01-01T01:00:00Z");
        let points: Vec<(u32, DateTime<Utc>)> =
            (0..180).map(|i| (i, start + TimeDelta::hours(12) * i as i32)).collect();
        let now = utc("2026-04-01T00:00:00Z");
        let keep = Keep { daily: 3, weekly: 2, monthly: 2, yearly: 0 };
        let kept: Vec<DateTime<Utc>> =
            keep.keep(chrono_tz::UTC, &points, now).into_iter().map(|i| points[i as usize].1).collect();
        assert_eq!(
            kept,
            vec![
                utc("2026-02-28T13:00:00Z"), // newest of February
                utc("2026-03-29T13:00:00Z"), // newest of the 29th and of ISO week 13 (ends Sunday 29th)
                utc("2026-03-30T13:00:00Z"),
                utc("2026-03-31T13:00:00Z"), // newest of the 31st, of week 14 and of March
            ]
        );
    }

    #[test]
    fn gfs_days_are_the_rules_time_zone_days() {
        // 23:30 UTC on 1 March is already 2 March in Tokyo, like 01:00 UTC on 2 March.
        let points = [(1, utc("2026-03-01T23:30:00Z")), (2, utc("2026-03-02T01:00:00Z"))];
        let keep = Keep { daily: 2, ..Keep::default() };
        let now = utc("2026-03-03T00:00:00Z");
        assert_eq!(keep.keep(chrono_tz::UTC, &points, now), BTreeSet::from([1, 2]));
        assert_eq!(keep.keep(chrono_tz::Asia::Tokyo, &points, now), BTreeSet::from([2]));
    }

    #[test]
    fn points_newer_than_now_are_kept_outside_the_tiers() {
        let points =
            [(1, utc("2026-03-01T00:00:00Z")), (2, utc("2026-03-02T00:00:00Z")), (3, utc("2026-03-09T00:00:00Z"))];
        let keep = Keep { daily: 1, ..Keep::default() };
        assert_eq!(keep.keep(chrono_tz::UTC, &points, utc("2026-03-05T00:00:00Z")), BTreeSet::from([2, 3]));
    }

    fn keeps() -> impl Strategy<Value = Keep> {
        (0u32..6, 0u32..5, 0u32..4, 0u32..3)
            .prop_filter("keeps something", |(d, w, m, y)| d + w + m + y > 0)
            .prop_map(|(daily, weekly, monthly, yearly)| Keep { daily, weekly, monthly, yearly })
    }

    /// Up to 60 points over about three years before `now`, at any minute.
    fn points() -> impl Strategy<Value = Vec<(u32, DateTime<Utc>)>> {
        proptest::collection::vec(0i64..(3 * 366 * 24 * 60), 1..60).prop_map(|minutes_ago| {
            let now = now();
            minutes_ago.into_iter().enumerate().map(|(i, ago)| (i as u32, now - TimeDelta::minutes(ago))).collect()
        })
    }

    fn now() -> DateTime<Utc> {
        utc("2026-12-03T16:00:00Z")
    }

    fn zones() -> impl Strategy<Value = Tz> {
        prop_oneof![
            Just(chrono_tz::UTC),
            Just(chrono_tz::America::New_York),
            Just(chrono_tz::Australia::Lord_Howe),
            Just(chrono_tz::Asia::Kolkata)
        ]
    }

    fn newest(points: &[(u32, DateTime<Utc>)]) -> u32 {
        points.iter().max_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0))).map(|(id, _)| *id).expect("points")
    }

    proptest! {
        #[test]
        fn the_newest_point_is_always_kept(keep in keeps(), zone in zones(), points in points()) {
            prop_assert!(keep.keep(zone, &points, now()).contains(&newest(&points)));
        }

        #[test]
        fn never_more_than_the_tiers_add_up_to(keep in keeps(), zone in zones(), points in points()) {
            let kept = keep.keep(zone, &points, now());
            prop_assert!(kept.len() <= (keep.daily + keep.weekly + keep.monthly + keep.yearly) as usize);
        }

        #[test]
        fn keeping_the_kept_set_changes_nothing(keep in keeps(), zone in zones(), points in points()) {
            let kept = keep.keep(zone, &points, now());
            let kept_points: Vec<_> = points.iter().filter(|(id, _)| kept.contains(id)).cloned().collect();
            prop_assert_eq!(keep.keep(zone, &kept_points, now()), kept);
        }

        #[test]
        fn an_older_point_never_removes_a_newer_daily_point(
            daily in 1u32..8,
            zone in zones(),
            points in points(),
            older_by in 1i64..(400 * 24 * 60),
            pick in any::<prop::sample::Index>(),
        ) {
            let keep = Keep { daily, ..Keep::default() };
            let kept = keep.keep(zone, &points, now());
            let kept_ids: Vec<u32> = kept.iter().copied().collect();
            let anchor = *pick.get(&kept_ids);
            let anchor_time = points[anchor as usize].1;
            let mut more = points.clone();
            more.push((points.len() as u32, anchor_time - TimeDelta::minutes(older_by)));
            let kept_after = keep.keep(zone, &more, now());
            for (id, created_at) in &points {
                if kept.contains(id) && *created_at >= anchor_time {
                    prop_assert!(kept_after.contains(id), "point {} at {} dropped", id, created_at);
                }
            }
        }

        #[test]
        fn daily_only_with_one_point_a_day_keeps_exactly_the_last_n_days(
            daily in 1u32..20,
            days in 1u32..60,
            zone in zones(),
            minute_of_day in 0i64..(24 * 60),
        ) {
            // One point a day at the same local time, the newest today.
            let today = now().with_timezone(&zone).date_naive();
            let points: Vec<(u32, DateTime<Utc>)> = (0..days)
                .map(|ago| {
                    let date = today - TimeDelta::days(ago.into());
                    let local = date.and_hms_opt(0, 0, 0).expect("midnight") + TimeDelta::minutes(minute_of_day);
                    let at = local
                        .and_local_timezone(zone)
                        .earliest()
                        .unwrap_or_else(|| (local + TimeDelta::hours(1)).and_local_timezone(zone).earliest().expect("after a gap"));
                    (ago, at.with_timezone(&Utc).min(now()))
                })
                .collect();
            let kept = Keep { daily, ..Keep::default() }.keep(zone, &points, now());
            let expected: BTreeSet<u32> = (0..days.min(daily)).collect();
            prop_assert_eq!(kept, expected);
        }
    }

    #[test]
    fn unattended_points_expire_by_days_or_keep_counts_and_locks_hold_them() {
        let now = DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z").unwrap().with_timezone(&Utc);
        let days_ago = |d: i64| now - TimeDelta::days(d);
        let points = vec![("a", days_ago(40)), ("b", days_ago(31)), ("c", days_ago(29)), ("d", days_ago(1))];
        let days = lifeboat_proto::Retention { days: 30, ..Default::default() };
        assert_eq!(expired_points(&days, None, &points, now), (vec!["a", "b"], vec![]));
        let keep = lifeboat_proto::Retention { keep_daily: 2, ..Default::default() };
        assert_eq!(expired_points(&keep, None, &points, now), (vec!["a", "b"], vec![]));
        let lock =
            lifeboat_proto::RecoveryLock { mode: "COMPLIANCE".into(), min_retention_days: 35, ..Default::default() };
        assert_eq!(expired_points(&days, Some(&lock), &points, now), (vec!["a"], vec!["b"]));
        let old = vec![("a", days_ago(400))];
        assert_eq!(expired_points(&days, None, &old, now), (vec![], vec![]), "the newest stays");
        let none = lifeboat_proto::Retention::default();
        assert_eq!(expired_points(&none, None, &points, now), (vec![], vec![]));
    }
}
