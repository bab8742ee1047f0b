//! The retention sweep: which of Lifeboat's recovery points have outlived their retention,
//! whether their lock lets them go, and which EBS snapshots are due for the archive tier
//! ([`decide`], pure); then deleting and archiving them ([`sweep`]), which the scheduler runs
//! periodically and `lifeboat backup sweep` runs on demand.
//!
//! Everything is read from the points' own tags (plan, rule, run, retention, expiry, lock,
//! cold-at), never from a plan file that may have changed or gone since.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use aws_sdk_ec2::types::TargetStorageTier;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use futures::stream::{self, StreamExt};
use lifeboat_common::aws::{classify, Accounts, AwsError};
use lifeboat_common::backup::{format_retention, point_tags_key};
use lifeboat_common::shared::SharedStore;
use lifeboat_proto::Retention;

use crate::plan::{Keep, Lock, LockMode};
use crate::points::{self, Clients, ListError, Location, Point, PointKind, Readiness};
use crate::retention::{may_delete, DeleteRefusal};

/// Deletions and tier moves in flight at once, per sweep.
pub const SWEEP_CONCURRENCY: usize = 8;

/// Why a point stays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeepReason {
    /// A `days` rule's point before its `lifeboat:expires-at`.
    NotExpired { expires_at: DateTime<Utc> },
    /// A keep-last-N rule still keeps its run (`retention` as the group's newest point says).
    Retained { retention: String },
    /// Still being made.
    InProgress,
    /// A retention (or time zone) this sweep cannot read: never guess a point away.
    UnreadableRetention,
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::NotExpired { expires_at } => write!(f, "expires {}", rfc3339(*expires_at)),
            KeepReason::Retained { retention } => write!(f, "kept by {retention}"),
            KeepReason::InProgress => write!(f, "still being made"),
            KeepReason::UnreadableRetention => write!(f, "no readable lifeboat:retention"),
        }
    }
}

/// What the sweep does with one point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Keep(KeepReason),
    /// Retention is over and the lock allows it; `governance_override` when only the override
    /// does.
    Delete {
        governance_override: bool,
    },
    /// Retention is over but the lock holds.
    Refuse(DeleteRefusal),
    /// Kept, and an EBS snapshot past its `lifeboat:cold-at` still in the standard tier.
    Archive,
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The points a keep-last-N rule counts together: one plan's rule for one resource in one
/// account and region, copies apart from sources (they live by their destination's retention).
type GroupKey<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, bool);

fn group_key(point: &Point) -> GroupKey<'_> {
    (
        &point.account_id,
        &point.region,
        &point.tags.plan,
        &point.tags.rule,
        point.source_resource(),
        point.tags.copy_of.is_some(),
    )
}

/// A keep-last-N retention and its time zone; None for `days` and for anything unreadable.
fn keep_of(retention: &Retention) -> Option<(Keep, Option<Tz>)> {
    if retention.days > 0 {
        return None;
    }
    let keep = Keep {
        daily: retention.keep_daily,
        weekly: retention.keep_weekly,
        monthly: retention.keep_monthly,
        yearly: retention.keep_yearly,
    };
    let zone = if retention.time_zone.is_empty() { Some(chrono_tz::UTC) } else { retention.time_zone.parse().ok() };
    Some((keep, zone))
}

/// What happens to each of `points` (in their order) at `now`.
///
/// `days` points go at their `lifeboat:expires-at` (or creation plus the days, when the tag is
/// missing). Keep-last-N points go when [`Keep::keep`] over their group no longer keeps their
/// run: the points of one run (a volume set's snapshots) stay or go together, and only runs
/// that are done and have a complete point count in the tiers, so a failing or unfinished
/// backup never pushes a good one out. A point whose retention is over then meets its lock ([`may_delete`], with the end
/// of the lock from `lifeboat:lock-until`): COMPLIANCE refuses before it, GOVERNANCE refuses
/// unless `governance_override`, NONE allows. An unknown lock mode is held like COMPLIANCE.
pub fn decide(points: &[Point], now: DateTime<Utc>, governance_override: bool) -> Vec<Decision> {
    // Why each point stays; None: its retention is over.
    let mut kept: Vec<Option<KeepReason>> = vec![None; points.len()];
    let mut groups: BTreeMap<GroupKey, Vec<usize>> = BTreeMap::new();
    for (i, point) in points.iter().enumerate() {
        match &point.tags.retention {
            // Unfinished ones too: their run does not count until it is done.
            Some(retention) if retention.days == 0 => groups.entry(group_key(point)).or_default().push(i),
            _ if point.readiness == Readiness::InProgress => kept[i] = Some(KeepReason::InProgress),
            None => kept[i] = Some(KeepReason::UnreadableRetention),
            Some(retention) => {
                let expires_at = point
                    .tags
                    .expires_at
                    .or_else(|| lifeboat_common::backup::expires_at(retention, point.created_at))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                kept[i] = (now < expires_at).then_some(KeepReason::NotExpired { expires_at });
            }
        }
    }
    for members in groups.values() {
        for (i, reason) in keep_group(points, members, now) {
            kept[i] = reason;
        }
    }
    points
        .iter()
        .zip(kept)
        .map(|(point, reason)| match reason {
            Some(_) if archive_due(point, now) => Decision::Archive,
            Some(reason) => Decision::Keep(reason),
            None => lock_decision(point, now, governance_override),
        })
        .collect()
}

/// Keep-last-N over one group, by the retention of its newest point (the rule as it is now):
/// the reason each member stays, or None when it goes.
fn keep_group(points: &[Point], members: &[usize], now: DateTime<Utc>) -> Vec<(usize, Option<KeepReason>)> {
    let newest = members
        .iter()
        .copied()
        .max_by(|a, b| (points[*a].created_at, &points[*a].id).cmp(&(points[*b].created_at, &points[*b].id)));
    let retention = newest.and_then(|i| points[i].tags.retention.clone()).unwrap_or_default();
    let Some((keep, Some(zone))) = keep_of(&retention) else {
        return members.iter().map(|i| (*i, Some(KeepReason::UnreadableRetention))).collect();
    };
    let run_of = |i: usize| {
        let point = &points[i];
        if point.tags.run.is_empty() {
            point.id.clone()
        } else {
            point.tags.run.clone()
        }
    };
    // A run is as old as its earliest point; it counts once none of its points is still being
    // made and one of them is ready (a volume set with one failed snapshot still restores the
    // others).
    let mut runs: BTreeMap<String, Run> = BTreeMap::new();
    for &i in members {
        let point = &points[i];
        let run =
            runs.entry(run_of(i)).or_insert(Run { created_at: point.created_at, ready: false, unfinished: false });
        run.created_at = run.created_at.min(point.created_at);
        run.ready |= point.readiness == Readiness::Ready;
        run.unfinished |= point.readiness == Readiness::InProgress;
    }
    let counted: Vec<(String, DateTime<Utc>)> = runs
        .iter()
        .filter(|(_, run)| run.ready && !run.unfinished)
        .map(|(id, run)| (id.clone(), run.created_at))
        .collect();
    let kept: BTreeSet<String> = keep.keep(zone, &counted, now);
    let retained = KeepReason::Retained { retention: format_retention(&retention) };
    members
        .iter()
        .map(|&i| {
            let run = run_of(i);
            let reason = if runs[&run].unfinished {
                Some(KeepReason::InProgress)
            } else {
                kept.contains(&run).then(|| retained.clone())
            };
            (i, reason)
        })
        .collect()
}

/// What a keep-last-N group knows of one run.
struct Run {
    created_at: DateTime<Utc>,
    ready: bool,
    unfinished: bool,
}

fn archive_due(point: &Point, now: DateTime<Utc>) -> bool {
    point.kind == PointKind::EbsSnapshot
        && point.readiness == Readiness::Ready
        && point.tags.cold_at.is_some_and(|at| at <= now)
        && point.storage_tier.as_deref().is_none_or(|tier| tier == "standard")
}

/// The lock as the point carries it: its end is on the point, so [`may_delete`] gets a lock of
/// no days starting there.
fn lock_decision(point: &Point, now: DateTime<Utc>, governance_override: bool) -> Decision {
    let mode = match point.tags.lock.as_str() {
        "" | "NONE" => LockMode::None,
        "GOVERNANCE" => LockMode::Governance,
        _ => LockMode::Compliance,
    };
    let until = point.tags.lock_until;
    let lock = Lock { mode, min_retention_days: until.map(|_| 0), max_retention_days: None, snapshot_lock: false };
    let start = until.unwrap_or(point.created_at);
    match may_delete(&lock, start, now, false) {
        Ok(()) => Decision::Delete { governance_override: false },
        Err(DeleteRefusal::Governance { .. }) if governance_override => Decision::Delete { governance_override: true },
        Err(refusal) => Decision::Refuse(refusal),
    }
}

/// Where to sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Empty: the caller's account.
    pub account_id: String,
    pub region: String,
}

#[derive(Clone, Debug, Default)]
pub struct SweepOptions {
    pub targets: Vec<Target>,
    /// Report what would happen without deleting or moving anything.
    pub dry_run: bool,
    /// Delete GOVERNANCE-locked points whose retention is over before their lock ends.
    pub governance_override: bool,
}

/// What became of a point (in a dry run: what would have).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Kept(KeepReason),
    Deleted {
        governance_override: bool,
    },
    Refused(DeleteRefusal),
    Archived,
    /// The AWS error code of the call that failed.
    Failed {
        code: String,
        message: String,
    },
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Kept(_) => "kept",
            Outcome::Deleted { .. } => "deleted",
            Outcome::Refused(_) => "refused",
            Outcome::Archived => "archived",
            Outcome::Failed { .. } => "failed",
        }
    }

    /// Why, in words (empty for a plain deletion or move).
    pub fn detail(&self) -> String {
        match self {
            Outcome::Kept(reason) => reason.to_string(),
            Outcome::Deleted { governance_override: true } => "under the governance override".to_string(),
            Outcome::Deleted { governance_override: false } | Outcome::Archived => String::new(),
            Outcome::Refused(refusal) => refusal.to_string(),
            Outcome::Failed { code, message } => format!("{code}: {message}"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct PointReport {
    pub point: Point,
    pub outcome: Outcome,
}

/// A target whose points could not be listed: none of them was touched.
#[derive(Debug)]
pub struct TargetFailure {
    pub target: Target,
    pub error: ListError,
}

#[derive(Debug, Default)]
pub struct SweepReport {
    pub dry_run: bool,
    pub points: Vec<PointReport>,
    pub failed_targets: Vec<TargetFailure>,
}

impl SweepReport {
    /// Whether anything failed: a listing, a deletion or a move.
    pub fn has_failures(&self) -> bool {
        !self.failed_targets.is_empty() || self.points.iter().any(|p| matches!(p.outcome, Outcome::Failed { .. }))
    }
}

/// Sweeps every target at `now`: lists its points, decides, and (unless a dry run) deletes
/// and archives. A target that cannot be listed is reported and left alone; a point whose
/// deletion fails is reported with the AWS code and tried again by the next sweep.
pub async fn sweep(
    accounts: &Accounts,
    store: &dyn SharedStore,
    options: &SweepOptions,
    now: DateTime<Utc>,
) -> SweepReport {
    let mut report = SweepReport { dry_run: options.dry_run, ..Default::default() };
    for target in &options.targets {
        let swept = async {
            let account_id = accounts.resolve_account(&target.account_id).await?;
            let clients = Clients::connect(accounts, &account_id, &target.region).await?;
            let at = Location { account_id: &account_id, region: &target.region };
            sweep_with(&clients, store, at, options, now).await
        };
        match swept.await {
            Ok(points) => report.points.extend(points),
            Err(error) => {
                tracing::warn!(account_id = %target.account_id, region = %target.region, %error, "cannot list recovery points");
                report.failed_targets.push(TargetFailure { target: target.clone(), error });
            }
        }
    }
    report
}

/// One account and region of [`sweep`], with ready clients.
pub async fn sweep_with(
    clients: &Clients,
    store: &dyn SharedStore,
    at: Location<'_>,
    options: &SweepOptions,
    now: DateTime<Utc>,
) -> Result<Vec<PointReport>, ListError> {
    let points = points::list_with(clients, store, at).await?;
    let decisions = decide(&points, now, options.governance_override);
    Ok(stream::iter(points.into_iter().zip(decisions))
        .map(|(point, decision)| async move {
            let outcome = act(clients, store, &point, decision, options.dry_run).await;
            PointReport { point, outcome }
        })
        .buffered(SWEEP_CONCURRENCY)
        .collect()
        .await)
}

async fn act(clients: &Clients, store: &dyn SharedStore, point: &Point, decision: Decision, dry_run: bool) -> Outcome {
    let outcome = match decision {
        Decision::Keep(reason) => return Outcome::Kept(reason),
        Decision::Refuse(refusal) => return Outcome::Refused(refusal),
        Decision::Delete { governance_override } => {
            if governance_override {
                tracing::warn!(
                    point = %point.id,
                    kind = point.kind.as_str(),
                    region = %point.region,
                    lock_until = ?point.tags.lock_until,
                    dry_run,
                    "deleting a GOVERNANCE-locked recovery point under the governance override"
                );
            }
            Outcome::Deleted { governance_override }
        }
        Decision::Archive => Outcome::Archived,
    };
    if dry_run {
        return outcome;
    }
    let done = match outcome {
        Outcome::Archived => archive(&clients.ec2, point).await,
        _ => delete(clients, store, point).await,
    };
    match done {
        Ok(()) => {
            tracing::info!(point = %point.id, kind = point.kind.as_str(), region = %point.region, outcome = outcome.name(), "swept");
            outcome
        }
        Err(e) => {
            tracing::warn!(point = %point.id, kind = point.kind.as_str(), region = %point.region, error = %e, "sweep failed");
            Outcome::Failed { code: e.code, message: e.message }
        }
    }
}

/// "Already gone" is what a deletion wants.
fn gone_is_done(result: Result<(), AwsError>, codes: &[&str]) -> Result<(), AwsError> {
    match result {
        Err(e) if codes.contains(&e.code.as_str()) => Ok(()),
        other => other,
    }
}

async fn delete_ebs_snapshot(ec2: &aws_sdk_ec2::Client, snapshot_id: &str) -> Result<(), AwsError> {
    let deleted = ec2.delete_snapshot().snapshot_id(snapshot_id).send().await;
    gone_is_done(deleted.map(|_| ()).map_err(|e| classify("ec2:DeleteSnapshot", e)), &["InvalidSnapshot.NotFound"])
}

async fn delete(clients: &Clients, store: &dyn SharedStore, point: &Point) -> Result<(), AwsError> {
    match point.kind {
        PointKind::EbsSnapshot => delete_ebs_snapshot(&clients.ec2, &point.id).await,
        PointKind::Ami => {
            let deregistered = clients.ec2.deregister_image().image_id(&point.id).send().await;
            gone_is_done(
                deregistered.map(|_| ()).map_err(|e| classify("ec2:DeregisterImage", e)),
                &["InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"],
            )?;
            // Its snapshots are useless without it; one left behind by a failure here still
            // carries the point's tags, so the next sweep finds it as a snapshot.
            for snapshot_id in &point.snapshot_ids {
                delete_ebs_snapshot(&clients.ec2, snapshot_id).await?;
            }
            Ok(())
        }
        PointKind::RdsSnapshot => {
            let deleted = clients.rds.delete_db_snapshot().db_snapshot_identifier(&point.id).send().await;
            gone_is_done(
                deleted.map(|_| ()).map_err(|e| classify("rds:DeleteDBSnapshot", e)),
                &["DBSnapshotNotFound", "DBSnapshotNotFoundFault"],
            )
        }
        PointKind::RdsClusterSnapshot => {
            let deleted =
                clients.rds.delete_db_cluster_snapshot().db_cluster_snapshot_identifier(&point.id).send().await;
            gone_is_done(
                deleted.map(|_| ()).map_err(|e| classify("rds:DeleteDBClusterSnapshot", e)),
                &["DBClusterSnapshotNotFoundFault", "DBClusterSnapshotNotFound"],
            )
        }
        PointKind::DynamodbBackup => {
            let deleted = clients.dynamodb.delete_backup().backup_arn(&point.id).send().await;
            gone_is_done(
                deleted.map(|_| ()).map_err(|e| classify("dynamodb:DeleteBackup", e)),
                &["BackupNotFoundException"],
            )?;
            store
                .delete(&point_tags_key(&point.id))
                .await
                .map_err(|e| AwsError::retryable("store:DeletePointTags", "StoreError", e.to_string()))
        }
    }
}

async fn archive(ec2: &aws_sdk_ec2::Client, point: &Point) -> Result<(), AwsError> {
    ec2.modify_snapshot_tier()
        .snapshot_id(&point.id)
        .storage_tier(TargetStorageTier::Archive)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| classify("ec2:ModifySnapshotTier", e))
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use lifeboat_common::backup::PointTags;
    use proptest::prelude::*;

    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("an RFC 3339 time")
    }

    fn now() -> DateTime<Utc> {
        utc("2026-12-03T16:00:00Z")
    }

    fn tags(retention: Retention) -> PointTags {
        PointTags {
            plan: "prod".into(),
            rule: "nightly".into(),
            run: String::new(),
            task_id: String::new(),
            resource_id: "vol-1".into(),
            retention: Some(retention),
            expires_at: None,
            lock: "NONE".into(),
            lock_until: None,
            copy_of: None,
            cold_at: None,
        }
    }

    fn days(n: u32) -> Retention {
        Retention { days: n, ..Default::default() }
    }

    fn daily(n: u32) -> Retention {
        Retention { keep_daily: n, time_zone: "UTC".into(), ..Default::default() }
    }

    fn point(id: &str, created_at: DateTime<Utc>, tags: PointTags) -> Point {
        Point {
            kind: PointKind::EbsSnapshot,
            id: id.into(),
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            resource_id: "vol-1".into(),
            created_at,
            size_gib: Some(8),
            state: "completed".into(),
            readiness: Readiness::Ready,
            storage_tier: Some("standard".into()),
            snapshot_ids: Vec::new(),
            tags: PointTags { run: format!("run-{id}"), ..tags },
        }
    }

    fn deleted(decision: &Decision) -> bool {
        matches!(decision, Decision::Delete { .. })
    }

    #[test]
    fn days_points_go_at_their_expiry_tag_else_after_their_days() {
        let created = now() - TimeDelta::days(3);
        let tagged = PointTags { expires_at: Some(now() + TimeDelta::hours(1)), ..tags(days(1)) };
        let points =
            [point("a", created, tagged), point("b", created, tags(days(2))), point("c", created, tags(days(4)))];
        let decisions = decide(&points, now(), false);
        assert_eq!(decisions[0], Decision::Keep(KeepReason::NotExpired { expires_at: now() + TimeDelta::hours(1) }));
        assert_eq!(decisions[1], Decision::Delete { governance_override: false });
        assert_eq!(decisions[2], Decision::Keep(KeepReason::NotExpired { expires_at: created + TimeDelta::days(4) }));
    }

    #[test]
    fn locks_hold_expired_points() {
        let created = now() - TimeDelta::days(10);
        let expired = PointTags { expires_at: Some(now() - TimeDelta::days(1)), ..tags(days(9)) };
        let locked = |mode: &str, until: Option<DateTime<Utc>>| PointTags {
            lock: mode.into(),
            lock_until: until,
            ..expired.clone()
        };
        let later = now() + TimeDelta::days(5);
        let points = [
            point("compliance", created, locked("COMPLIANCE", Some(later))),
            point("compliance-over", created, locked("COMPLIANCE", Some(now() - TimeDelta::seconds(1)))),
            point("governance", created, locked("GOVERNANCE", Some(later))),
            point("unknown-mode", created, locked("LEGAL-HOLD", None)),
            point("none", created, expired.clone()),
        ];
        let without = decide(&points, now(), false);
        assert_eq!(without[0], Decision::Refuse(DeleteRefusal::Compliance { until: later }));
        assert!(deleted(&without[1]));
        assert_eq!(without[2], Decision::Refuse(DeleteRefusal::Governance { until: Some(later) }));
        assert!(matches!(without[3], Decision::Refuse(DeleteRefusal::Compliance { .. })));
        assert_eq!(without[4], Decision::Delete { governance_override: false });
        let with = decide(&points, now(), true);
        assert!(matches!(with[0], Decision::Refuse(_)));
        assert_eq!(with[2], Decision::Delete { governance_override: true });
        assert_eq!(with[4], Decision::Delete { governance_override: false });
    }

    #[test]
    fn keep_rules_count_runs_per_resource_and_copies_apart() {
        let day = |n: i64| now() - TimeDelta::days(n);
        let copy = PointTags { copy_of: Some("snap-src".into()), ..tags(daily(1)) };
        let other = PointTags { resource_id: "vol-2".into(), ..tags(daily(2)) };
        let points = [
            point("d3", day(3), tags(daily(2))),
            point("d2", day(2), tags(daily(2))),
            point("d1", day(1), tags(daily(2))),
            point("copy-old", day(5), copy.clone()),
            point("other-old", day(9), other.clone()),
        ];
        let decisions = decide(&points, now(), false);
        let retained =
            Decision::Keep(KeepReason::Retained { retention: "daily=2,weekly=0,monthly=0,yearly=0@UTC".into() });
        assert!(deleted(&decisions[0]));
        assert_eq!(decisions[1], retained);
        assert_eq!(decisions[2], retained);
        // The newest (only) copy and the only point of another volume stay.
        assert!(matches!(decisions[3], Decision::Keep(KeepReason::Retained { .. })));
        assert!(matches!(decisions[4], Decision::Keep(KeepReason::Retained { .. })));
    }

    #[test]
    fn a_runs_points_stay_together_and_unfinished_runs_push_nothing_out() {
        let day = |n: i64| now() - TimeDelta::days(n);
        let in_run = |id: &str, at, run: &str| PointTags { run: run.into(), ..point(id, at, tags(daily(1))).tags };
        let mut points = vec![
            Point { tags: in_run("a1", day(2), "old"), ..point("a1", day(2), tags(daily(1))) },
            Point { tags: in_run("a2", day(2), "old"), ..point("a2", day(2), tags(daily(1))) },
            Point { tags: in_run("b1", day(1), "new"), ..point("b1", day(1), tags(daily(1))) },
        ];
        points[2].readiness = Readiness::Failed;
        let decisions = decide(&points, now(), false);
        // The failed newer run counts in no tier, so the older (ready) run's two points stay.
        assert!(matches!(decisions[0], Decision::Keep(KeepReason::Retained { .. })));
        assert!(matches!(decisions[1], Decision::Keep(KeepReason::Retained { .. })));
        assert!(deleted(&decisions[2]));
        points[2].readiness = Readiness::InProgress;
        let decisions = decide(&points, now(), false);
        assert_eq!(decisions[2], Decision::Keep(KeepReason::InProgress));
        assert!(matches!(decisions[0], Decision::Keep(KeepReason::Retained { .. })));
        // Half done: the newer run's ready point waits with it, and the older run still stays.
        points.push(Point { tags: in_run("b2", day(1), "new"), ..point("b2", day(1), tags(daily(1))) });
        let decisions = decide(&points, now(), false);
        assert_eq!(decisions[3], Decision::Keep(KeepReason::InProgress));
        assert!(matches!(decisions[0], Decision::Keep(KeepReason::Retained { .. })));
        // Done: the newer run pushes the older one out.
        points[2].readiness = Readiness::Ready;
        let decisions = decide(&points, now(), false);
        assert!(deleted(&decisions[0]) && deleted(&decisions[1]));
        assert!(matches!(decisions[2], Decision::Keep(KeepReason::Retained { .. })));
        assert!(matches!(decisions[3], Decision::Keep(KeepReason::Retained { .. })));
    }

    #[test]
    fn unreadable_retention_or_time_zone_keeps() {
        let created = now() - TimeDelta::days(400);
        let bad_zone = Retention { time_zone: "Mars/Olympus".into(), ..daily(1) };
        let points = [
            point("a", created, PointTags { retention: None, ..tags(days(1)) }),
            point("b", created, tags(bad_zone.clone())),
            point("c", created - TimeDelta::days(1), tags(bad_zone)),
        ];
        for decision in decide(&points, now(), true) {
            assert_eq!(decision, Decision::Keep(KeepReason::UnreadableRetention));
        }
    }

    #[test]
    fn cold_snapshots_move_to_archive_once() {
        let created = now() - TimeDelta::days(20);
        let cold = PointTags { cold_at: Some(now() - TimeDelta::days(1)), ..tags(days(30)) };
        let mut archived = point("archived", created, cold.clone());
        archived.storage_tier = Some("archive".into());
        let mut ami = point("ami", created, cold.clone());
        ami.kind = PointKind::Ami;
        let expired = PointTags { expires_at: Some(now() - TimeDelta::hours(1)), ..cold.clone() };
        let points = [
            point("due", created, cold.clone()),
            archived,
            ami,
            point("not-yet", created, PointTags { cold_at: Some(now() + TimeDelta::days(1)), ..cold }),
            point("expired", created, expired),
        ];
        let decisions = decide(&points, now(), false);
        assert_eq!(decisions[0], Decision::Archive);
        assert!(matches!(decisions[1], Decision::Keep(_)));
        assert!(matches!(decisions[2], Decision::Keep(_)));
        assert!(matches!(decisions[3], Decision::Keep(_)));
        assert!(deleted(&decisions[4]));
    }

    fn locks() -> impl Strategy<Value = (String, Option<i64>)> {
        (prop_oneof![Just("NONE"), Just("GOVERNANCE"), Just("COMPLIANCE"), Just("")], proptest::option::of(-30i64..30))
            .prop_map(|(mode, until)| (mode.to_string(), until))
    }

    /// Up to 40 points of two resources, some copies, over two years, with any retention,
    /// lock and readiness.
    fn any_points() -> impl Strategy<Value = Vec<Point>> {
        let one = (
            0i64..(2 * 366 * 24),
            0u8..2,
            any::<bool>(),
            prop_oneof![
                (1u32..60).prop_map(days),
                (1u32..5, 0u32..3).prop_map(|(d, w)| Retention {
                    keep_daily: d,
                    keep_weekly: w,
                    time_zone: "Europe/Berlin".into(),
                    ..Default::default()
                })
            ],
            locks(),
            prop_oneof![Just(Readiness::Ready), Just(Readiness::InProgress), Just(Readiness::Failed)],
        );
        proptest::collection::vec(one, 1..40).prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (hours_ago, resource, copy, retention, (lock, until), readiness))| {
                    let created = now() - TimeDelta::hours(hours_ago);
                    let tags = PointTags {
                        resource_id: format!("vol-{resource}"),
                        copy_of: copy.then(|| "snap-src".to_string()),
                        expires_at: lifeboat_common::backup::expires_at(&retention, created),
                        lock,
                        lock_until: until.map(|d| now() + TimeDelta::days(d)),
                        ..tags(retention)
                    };
                    Point { readiness, ..point(&format!("p{i:02}"), created, tags) }
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn compliance_is_never_deleted_before_its_lock_ends(points in any_points(), over in any::<bool>()) {
            for (point, decision) in points.iter().zip(decide(&points, now(), over)) {
                let held = point.tags.lock == "COMPLIANCE" && point.tags.lock_until.is_none_or(|until| now() < until);
                prop_assert!(!(held && deleted(&decision)), "{} deleted under {:?}", point.id, point.tags.lock_until);
            }
        }

        #[test]
        fn governance_goes_early_only_with_the_override(points in any_points()) {
            let without = decide(&points, now(), false);
            let with = decide(&points, now(), true);
            for ((point, plain), overridden) in points.iter().zip(&without).zip(&with) {
                let held = point.tags.lock == "GOVERNANCE" && point.tags.lock_until.is_none_or(|until| now() < until);
                if held {
                    prop_assert!(!deleted(plain), "{} deleted without the override", point.id);
                    if matches!(plain, Decision::Refuse(_)) {
                        prop_assert_eq!(overridden, &Decision::Delete { governance_override: true });
                    }
                } else {
                    // The override changes nothing for anything else.
                    prop_assert_eq!(plain, overridden);
                }
            }
        }

        #[test]
        fn unfinished_points_and_unexpired_days_points_stay(points in any_points()) {
            for (point, decision) in points.iter().zip(decide(&points, now(), true)) {
                if point.readiness == Readiness::InProgress {
                    prop_assert_eq!(&decision, &Decision::Keep(KeepReason::InProgress));
                }
                let unexpired = point.tags.expires_at.is_some_and(|at| now() < at);
                prop_assert!(!(unexpired && deleted(&decision)), "{} deleted before expiry", point.id);
            }
        }

        #[test]
        fn every_keep_group_keeps_its_newest_complete_run(points in any_points()) {
            let decisions = decide(&points, now(), true);
            let mut newest: BTreeMap<GroupKey, usize> = BTreeMap::new();
            for (i, point) in points.iter().enumerate() {
                let keep_rule = point.tags.retention.as_ref().is_some_and(|r| r.days == 0);
                if keep_rule && point.readiness == Readiness::Ready {
                    let entry = newest.entry(group_key(point)).or_insert(i);
                    if (point.created_at, &point.tags.run) > (points[*entry].created_at, &points[*entry].tags.run) {
                        *entry = i;
                    }
                }
            }
            for i in newest.into_values() {
                prop_assert!(!deleted(&decisions[i]), "{} is its group's newest", points[i].id);
            }
        }

        #[test]
        fn a_second_sweep_of_one_rule_deletes_nothing_more(points in any_points()) {
            // One rule's points, unlocked and complete: what the first sweep leaves, it keeps.
            let retention = points[0].tags.retention.clone();
            let points: Vec<Point> = points
                .into_iter()
                .map(|p| Point {
                    readiness: Readiness::Ready,
                    tags: PointTags { retention: retention.clone(), lock: "NONE".into(), lock_until: None, ..p.tags },
                    ..p
                })
                .collect();
            let decisions = decide(&points, now(), false);
            let left: Vec<Point> = points.iter().zip(&decisions)
                .filter(|(_, d)| !deleted(d)).map(|(p, _)| p.clone()).collect();
            for (point, decision) in left.iter().zip(decide(&left, now(), false)) {
                prop_assert!(!deleted(&decision), "{} deleted by a second sweep", point.id);
            }
        }
    }

    /// Error paths moto cannot produce, against the real SDK clients.
    mod aws {
        use aws_sdk_dynamodb::operation::list_backups::ListBackupsOutput;
        use aws_sdk_ec2::operation::delete_snapshot::{DeleteSnapshotError, DeleteSnapshotOutput};
        use aws_sdk_ec2::operation::deregister_image::DeregisterImageOutput;
        use aws_sdk_ec2::operation::describe_images::{DescribeImagesError, DescribeImagesOutput};
        use aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput;
        use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, Image, ImageState, Snapshot, SnapshotState};
        use aws_sdk_rds::operation::describe_db_cluster_snapshots::DescribeDbClusterSnapshotsOutput;
        use aws_sdk_rds::operation::describe_db_snapshots::DescribeDbSnapshotsOutput;
        use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
        use aws_smithy_types::error::ErrorMetadata;
        use lifeboat_common::shared::MemoryStore;

        use super::*;

        const AT: Location<'static> = Location { account_id: "123456789012", region: "us-east-1" };

        fn expired_tags() -> Vec<aws_sdk_ec2::types::Tag> {
            [
                ("lifeboat:plan", "prod"),
                ("lifeboat:retention", "days=1"),
                ("lifeboat:expires-at", "2026-12-01T00:00:00Z"),
            ]
            .into_iter()
            .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build())
            .collect()
        }

        fn snapshot(id: &str) -> Snapshot {
            Snapshot::builder()
                .snapshot_id(id)
                .volume_id("vol-1")
                .volume_size(8)
                .state(SnapshotState::Completed)
                .start_time(aws_sdk_ec2::primitives::DateTime::from_secs(now().timestamp() - 5 * 86400))
                .set_tags(Some(expired_tags()))
                .build()
        }

        fn image(id: &str, snapshot_id: &str) -> Image {
            let device = EbsBlockDevice::builder().snapshot_id(snapshot_id).volume_size(8).build();
            Image::builder()
                .image_id(id)
                .creation_date("2026-11-28T00:00:00Z")
                .state(ImageState::Available)
                .block_device_mappings(BlockDeviceMapping::builder().device_name("/dev/xvda").ebs(device).build())
                .set_tags(Some(expired_tags()))
                .build()
        }

        fn error(code: &str) -> ErrorMetadata {
            ErrorMetadata::builder().code(code).message(format!("mocked {code}")).build()
        }

        fn nothing_else() -> (aws_sdk_rds::Client, aws_sdk_dynamodb::Client) {
            let instances = mock!(aws_sdk_rds::Client::describe_db_snapshots)
                .then_output(|| DescribeDbSnapshotsOutput::builder().build());
            let clusters = mock!(aws_sdk_rds::Client::describe_db_cluster_snapshots)
                .then_output(|| DescribeDbClusterSnapshotsOutput::builder().build());
            let backups =
                mock!(aws_sdk_dynamodb::Client::list_backups).then_output(|| ListBackupsOutput::builder().build());
            (
                mock_client!(aws_sdk_rds, RuleMode::MatchAny, [&instances, &clusters]),
                mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&backups]),
            )
        }

        fn delete_fails(id: &'static str, code: &'static str) -> Rule {
            mock!(aws_sdk_ec2::Client::delete_snapshot)
                .match_requests(move |req| req.snapshot_id() == Some(id))
                .then_error(move || DeleteSnapshotError::generic(error(code)))
        }

        #[tokio::test]
        async fn a_region_whose_amis_cannot_be_listed_is_left_alone() {
            let images = mock!(aws_sdk_ec2::Client::describe_images)
                .then_error(|| DescribeImagesError::generic(error("UnauthorizedOperation")));
            let snapshots = mock!(aws_sdk_ec2::Client::describe_snapshots)
                .then_output(|| DescribeSnapshotsOutput::builder().snapshots(snapshot("snap-1")).build());
            let deletes =
                mock!(aws_sdk_ec2::Client::delete_snapshot).then_output(|| DeleteSnapshotOutput::builder().build());
            let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&images, &snapshots, &deletes]);
            let (rds, dynamodb) = nothing_else();
            let clients = Clients { ec2, rds, dynamodb };
            let store = MemoryStore::default();
            let swept = sweep_with(&clients, &store, AT, &SweepOptions::default(), now()).await;
            match swept {
                Err(ListError::Aws(e)) => assert_eq!(e.code, "UnauthorizedOperation"),
                other => panic!("expected the listing to fail, got {other:?}"),
            }
            assert_eq!(deletes.num_calls(), 0, "nothing is deleted in a region that cannot be listed");
        }

        #[tokio::test]
        async fn deletions_report_their_code_and_a_point_already_gone_is_deleted() {
            let images = mock!(aws_sdk_ec2::Client::describe_images)
                .then_output(|| DescribeImagesOutput::builder().images(image("ami-1", "snap-of-ami")).build());
            // Two pages; the AMI's own snapshot is listed too, and goes only with its AMI.
            let first_page = mock!(aws_sdk_ec2::Client::describe_snapshots)
                .match_requests(|req| req.next_token().is_none())
                .then_output(|| {
                    DescribeSnapshotsOutput::builder()
                        .snapshots(snapshot("snap-gone"))
                        .snapshots(snapshot("snap-of-ami"))
                        .next_token("page-2")
                        .build()
                });
            let second_page = mock!(aws_sdk_ec2::Client::describe_snapshots)
                .match_requests(|req| req.next_token() == Some("page-2"))
                .then_output(|| DescribeSnapshotsOutput::builder().snapshots(snapshot("snap-denied")).build());
            let gone = delete_fails("snap-gone", "InvalidSnapshot.NotFound");
            let denied = delete_fails("snap-denied", "UnauthorizedOperation");
            let ami_snapshot = delete_fails("snap-of-ami", "RequestLimitExceeded");
            let deregister =
                mock!(aws_sdk_ec2::Client::deregister_image).then_output(|| DeregisterImageOutput::builder().build());
            let ec2 = mock_client!(
                aws_sdk_ec2,
                RuleMode::MatchAny,
                [&images, &first_page, &second_page, &gone, &denied, &ami_snapshot, &deregister]
            );
            let (rds, dynamodb) = nothing_else();
            let clients = Clients { ec2, rds, dynamodb };
            let store = MemoryStore::default();
            let swept = sweep_with(&clients, &store, AT, &SweepOptions::default(), now()).await.expect("listed");
            let outcomes: BTreeMap<&str, &Outcome> = swept.iter().map(|r| (r.point.id.as_str(), &r.outcome)).collect();
            assert_eq!(outcomes.len(), 3, "{outcomes:?}");
            assert_eq!(outcomes["snap-gone"], &Outcome::Deleted { governance_override: false });
            assert!(matches!(outcomes["snap-denied"], Outcome::Failed { code, .. } if code == "UnauthorizedOperation"));
            // The AMI is gone but its snapshot is not: reported, and found again next time.
            assert!(matches!(outcomes["ami-1"], Outcome::Failed { code, .. } if code == "RequestLimitExceeded"));
            assert_eq!((first_page.num_calls(), second_page.num_calls(), deregister.num_calls()), (1, 1, 1));
        }
    }
}
