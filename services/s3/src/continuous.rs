//! When a continuous-backup check syncs a bucket. (helper h1)
//!
//! A check runs every `check_minutes`; it syncs when more than `min_updates` object updates are
//! pending, or when `max_interval_minutes` have passed since the last sync and any update is
//! pending. A bucket never synced before always syncs (the seed). Zero fields mean the defaults.

use chrono::{DateTime, Duration, Utc};
use lifeboat_proto::ContinuousBackup;

/// Default minutes between checks.
pub const DEFAULT_CHECK_MINUTES: u32 = 15;
/// Default number of pending updates above which a check syncs.
pub const DEFAULT_MIN_UPDATES: u32 = 32;
/// Default minutes after the last sync at which any pending update syncs.
pub const DEFAULT_MAX_INTERVAL_MINUTES: u32 = 60;

/// Whether a check syncs, and why (the why goes into the task's Done message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub sync: bool,
    pub why: String,
}

/// The settings with zero fields replaced by their defaults.
pub fn effective(settings: &ContinuousBackup) -> ContinuousBackup {
    let or = |value: u32, default: u32| if value == 0 { default } else { value };
    ContinuousBackup {
        enabled: settings.enabled,
        check_minutes: or(settings.check_minutes, DEFAULT_CHECK_MINUTES),
        min_updates: or(settings.min_updates, DEFAULT_MIN_UPDATES),
        max_interval_minutes: or(settings.max_interval_minutes, DEFAULT_MAX_INTERVAL_MINUTES),
    }
}

/// Decides whether the check at `now` (the run's due_at) syncs `pending` updates, given the
/// time of the last sync (the previous index's backed_up_at; None when there is none).
pub fn decide(
    pending: u64,
    last_sync: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    settings: &ContinuousBackup,
) -> Decision {
    let settings = effective(settings);
    let Some(last) = last_sync else {
        return Decision { sync: true, why: "no previous sync: seeding the vault".to_string() };
    };
    let min_updates = u64::from(settings.min_updates);
    if pending > min_updates {
        return Decision { sync: true, why: format!("{pending} updates pending, more than {min_updates}") };
    }
    let max_interval = Duration::minutes(i64::from(settings.max_interval_minutes));
    let since = now - last;
    let minutes = since.num_minutes();
    if pending > 0 && since >= max_interval {
        return Decision {
            sync: true,
            why: format!(
                "{pending} updates pending and {minutes} minutes since the last sync (at least {})",
                settings.max_interval_minutes
            ),
        };
    }
    Decision {
        sync: false,
        why: format!(
            "{pending} updates pending (sync above {min_updates}), {minutes} minutes since the last sync \
             (sync with any update after {})",
            settings.max_interval_minutes
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    fn defaults() -> ContinuousBackup {
        ContinuousBackup { enabled: true, ..Default::default() }
    }

    #[test]
    fn first_check_seeds() {
        assert!(decide(0, None, t0(), &defaults()).sync);
    }

    #[test]
    fn thirty_three_updates_sync_at_the_next_check() {
        let d = decide(33, Some(t0()), t0() + Duration::minutes(15), &defaults());
        assert!(d.sync, "{}", d.why);
        assert!(d.why.contains("33"), "{}", d.why);
    }

    #[test]
    fn thirty_two_updates_wait() {
        assert!(!decide(32, Some(t0()), t0() + Duration::minutes(15), &defaults()).sync);
    }

    #[test]
    fn five_updates_wait_until_an_hour_has_passed() {
        for minutes in [15, 30, 45] {
            let d = decide(5, Some(t0()), t0() + Duration::minutes(minutes), &defaults());
            assert!(!d.sync, "at +{minutes}: {}", d.why);
        }
        let d = decide(5, Some(t0()), t0() + Duration::minutes(60), &defaults());
        assert!(d.sync, "{}", d.why);
    }

    #[test]
    fn no_updates_never_sync() {
        assert!(!decide(0, Some(t0()), t0() + Duration::hours(2), &defaults()).sync);
    }

    #[test]
    fn explicit_settings_override_defaults() {
        let settings = ContinuousBackup { enabled: true, check_minutes: 5, min_updates: 3, max_interval_minutes: 10 };
        assert!(decide(4, Some(t0()), t0() + Duration::minutes(5), &settings).sync);
        assert!(!decide(2, Some(t0()), t0() + Duration::minutes(5), &settings).sync);
        assert!(decide(2, Some(t0()), t0() + Duration::minutes(10), &settings).sync);
    }
}
