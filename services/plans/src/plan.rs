//! The validated backup plan. Values of these types exist only after `load` has checked them,
//! so the scheduler and the sweep never re-check a schedule, a time zone or a lock's bounds.

use std::collections::BTreeMap;

use chrono::TimeDelta;
use chrono_tz::Tz;

/// A named set of rules; the lock and the tags apply to every recovery point any rule creates.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Part of every due id and of the `lifeboat:plan` tag, so it has no `/`.
    pub name: String,
    pub rules: Vec<Rule>,
    /// The lock of the points this plan creates, copies included; every retention lies within it.
    pub lock: Lock,
    /// Put on every recovery point besides Lifeboat's own `lifeboat:*` tags (which are reserved).
    pub tags: BTreeMap<String, String>,
    /// The protection groups defined at plan level, which rules select by name.
    pub protection_groups: Vec<ProtectionGroup>,
}

impl Plan {
    /// The rule due first after `after`, with its due time (the earliest; ties go to the first
    /// rule in the file).
    pub fn next_due(&self, after: chrono::DateTime<chrono::Utc>) -> Option<(&Rule, chrono::DateTime<chrono::Utc>)> {
        self.rules
            .iter()
            .filter_map(|rule| crate::schedule::next_due(rule, after).map(|due| (rule, due)))
            .min_by_key(|(_, due)| *due)
    }
}

/// When to back up what, and how long to keep it.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique in the plan; part of every due id and of the `lifeboat:rule` tag.
    pub name: String,
    pub schedule: Schedule,
    /// How long after its due time a backup may still start (AWS Backup's start window).
    pub start_window: TimeDelta,
    /// How long after its due time a backup must have completed, or it fails.
    pub completion_window: TimeDelta,
    pub selection: Selection,
    pub retention: Retention,
    pub copy_to: Vec<CopyTo>,
    pub options: RuleOptions,
    /// A restore drill of some of this rule's latest recovery points, after each run.
    pub drill: Option<Drill>,
    /// Where the selection's `route53` and `elbv2` configuration is exported; set exactly when
    /// `selection.config_services` is not empty.
    pub config_export: Option<ConfigExport>,
    /// The protection groups `selection.protection_groups` names, resolved (plan-level ones and
    /// those defined in the selection), in the selection's order; empty without `s3`.
    pub protection_groups: Vec<ProtectionGroup>,
    /// Where the groups' objects are copied: the rule's `vault`, or the plan's. Set exactly when
    /// the selection has `s3`.
    pub vault: Option<Vault>,
    /// Continuous backup of the groups (the rule's `continuous`, or the plan's, when enabled):
    /// besides its cron schedule (full runs) the rule is due every `check_minutes` for a check.
    pub continuous: Option<Continuous>,
}

impl Rule {
    /// Adds the rule's configuration exports to its run: their resource types in the selection
    /// and the bucket. A no-op for a rule without `route53` or `elbv2`.
    pub fn add_config_export(&self, run: &mut lifeboat_proto::BackupRun) {
        let Some(export) = &self.config_export else { return };
        let selection = run.selection.get_or_insert_with(Default::default);
        for service in &self.selection.config_services {
            let kind = service.resource_type() as i32;
            if !selection.resource_types.contains(&kind) {
                selection.resource_types.push(kind);
            }
        }
        run.config_export = Some(lifeboat_proto::ConfigExport {
            bucket: export.bucket.clone(),
            region: export.region.clone(),
            prefix: export.prefix.clone().unwrap_or_default(),
            kms_key_id: export.kms_key.clone().unwrap_or_default(),
        });
    }

    /// Adds the rule's protection groups to its run: `S3_BUCKET` and the groups' names in the
    /// selection, the groups themselves and the vault; for a continuous-backup check (`check`),
    /// the continuous settings too. A no-op for a rule without `s3`.
    pub fn add_protection_groups(&self, run: &mut lifeboat_proto::BackupRun, check: bool) {
        let Some(vault) = &self.vault else { return };
        if self.protection_groups.is_empty() {
            return;
        }
        let selection = run.selection.get_or_insert_with(Default::default);
        let kind = lifeboat_proto::ResourceType::S3Bucket as i32;
        if !selection.resource_types.contains(&kind) {
            selection.resource_types.push(kind);
        }
        selection.protection_groups = self.protection_groups.iter().map(|g| g.name.clone()).collect();
        run.protection_groups = self
            .protection_groups
            .iter()
            .map(|group| lifeboat_proto::ProtectionGroup {
                name: group.name.clone(),
                buckets: group
                    .buckets
                    .iter()
                    .map(|b| lifeboat_proto::GroupBucket {
                        bucket: b.bucket.clone(),
                        account_id: b.account.clone().unwrap_or_default(),
                        region: b.region.clone(),
                    })
                    .collect(),
                filter: Some(lifeboat_proto::ObjectFilter {
                    prefixes: group.filter.prefixes.clone(),
                    exclude_prefixes: group.filter.exclude_prefixes.clone(),
                    storage_classes: group.filter.storage_classes.clone(),
                }),
            })
            .collect();
        run.vault = Some(lifeboat_proto::S3Vault {
            bucket: vault.bucket.clone(),
            region: vault.region.clone(),
            account_id: vault.account.clone().unwrap_or_default(),
            kms_key_id: vault.kms_key.clone().unwrap_or_default(),
            prefix: vault.prefix.clone().unwrap_or_default(),
        });
        run.continuous = match (&self.continuous, check) {
            (Some(continuous), true) => Some(lifeboat_proto::ContinuousBackup {
                enabled: true,
                check_minutes: continuous.check_minutes,
                min_updates: continuous.min_updates,
                max_interval_minutes: continuous.max_interval_minutes,
            }),
            _ => None,
        };
    }
}

/// A named set of buckets, across accounts and regions, protected together (Clumio's
/// protection group); its objects are copied to the rule's vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectionGroup {
    /// Part of every vault key (`<prefix><group>/<bucket>/...`), so it has no `/`.
    pub name: String,
    pub buckets: Vec<GroupBucket>,
    pub filter: ObjectFilter,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupBucket {
    pub bucket: String,
    /// None: the deployment's own account.
    pub account: Option<String>,
    pub region: String,
}

/// Which objects of a group's buckets are protected; empty lists select everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectFilter {
    pub prefixes: Vec<String>,
    pub exclude_prefixes: Vec<String>,
    /// S3's names (`STANDARD`, `GLACIER_IR`...), as the listing reports them.
    pub storage_classes: Vec<String>,
}

/// The S3 storage classes a filter may name.
pub const STORAGE_CLASSES: [&str; 11] = [
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "OUTPOSTS",
    "GLACIER_IR",
    "SNOW",
    "EXPRESS_ONEZONE",
];

/// The bucket protection groups are copied to, in another region or account than the buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vault {
    pub bucket: String,
    pub region: String,
    /// None: the deployment's own account.
    pub account: Option<String>,
    /// SSE-KMS key of the copies and indexes; None: the bucket's default encryption.
    pub kms_key: Option<String>,
    /// Put before every key; ends with `/`.
    pub prefix: Option<String>,
}

/// Continuous backup settings (enabled: the rule has them at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Continuous {
    /// How often the groups are checked for pending updates.
    pub check_minutes: u32,
    /// A check syncs a bucket with more pending updates than this...
    pub min_updates: u32,
    /// ...or with any pending update this long after its last sync.
    pub max_interval_minutes: u32,
}

impl Default for Continuous {
    fn default() -> Self {
        Self { check_minutes: 15, min_updates: 32, max_interval_minutes: 60 }
    }
}

/// Route 53 and ELBv2 configuration, exported whole (per account, and per region for ELBv2)
/// to a JSON document in S3 rather than selected by tags; retention and copies do not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigService {
    Route53,
    Elbv2,
}

impl ConfigService {
    pub const ALL: [ConfigService; 2] = [ConfigService::Route53, ConfigService::Elbv2];

    /// The name used in plan files.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigService::Route53 => "route53",
            ConfigService::Elbv2 => "elbv2",
        }
    }

    pub fn parse(name: &str) -> Option<ConfigService> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    pub fn resource_type(self) -> lifeboat_proto::ResourceType {
        match self {
            ConfigService::Route53 => lifeboat_proto::ResourceType::Route53Zone,
            ConfigService::Elbv2 => lifeboat_proto::ResourceType::Elbv2LoadBalancer,
        }
    }
}

/// The S3 bucket (in another region than the exported configuration) that a rule's
/// configuration exports go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigExport {
    pub bucket: String,
    /// The bucket's region.
    pub region: String,
    pub prefix: Option<String>,
    pub kms_key: Option<String>,
}

/// A five-field cron expression (minute hour day-of-month month day-of-week) read in an IANA
/// time zone, so `0 2 * * *` in `Europe/Berlin` is 02:00 Berlin time in summer and winter.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// As written in the plan, for messages.
    pub expression: String,
    pub time_zone: Tz,
    pub(crate) cron: croner::Cron,
}

/// Which resources a rule backs up. A resource is selected when its type, account and region
/// are listed, it has every `include_tags` tag and none of the `exclude_tags` tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub resource_types: Vec<ResourceType>,
    /// Empty: the deployment's own account.
    pub accounts: Vec<String>,
    pub regions: Vec<String>,
    /// Empty only when the plan said `all_resources: true`: every resource of the listed types.
    pub include_tags: BTreeMap<String, String>,
    /// A resource with any of these tags (key and value) is left out.
    pub exclude_tags: BTreeMap<String, String>,
    /// `route53` and `elbv2` in `resource_types`: configuration exported whole, never by tags.
    pub config_services: Vec<ConfigService>,
    /// `s3` in `resource_types`: the buckets of protection groups, never selected by tags.
    pub s3: bool,
    /// The names of the protection groups `s3` backs up (plan-level or defined here).
    pub protection_groups: Vec<String>,
}

impl Selection {
    /// Whether the selection has types that tags and regions select (not only configuration
    /// exports and protection groups).
    pub fn has_tagged_types(&self) -> bool {
        !self.resource_types.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    /// One snapshot per volume.
    Ebs,
    /// An AMI of an instance.
    Ec2,
    RdsInstance,
    RdsCluster,
    /// An on-demand backup (and continuous backups with `options.continuous`).
    Dynamodb,
    /// The crash-consistent snapshots of all of an instance's volumes, taken together.
    EbsVolumeSet,
}

impl ResourceType {
    pub const ALL: [ResourceType; 6] = [
        ResourceType::Ebs,
        ResourceType::Ec2,
        ResourceType::RdsInstance,
        ResourceType::RdsCluster,
        ResourceType::Dynamodb,
        ResourceType::EbsVolumeSet,
    ];

    /// The name used in plan files.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Ebs => "ebs",
            ResourceType::Ec2 => "ec2",
            ResourceType::RdsInstance => "rds-instance",
            ResourceType::RdsCluster => "rds-cluster",
            ResourceType::Dynamodb => "dynamodb",
            ResourceType::EbsVolumeSet => "ebs-volume-set",
        }
    }

    pub fn parse(name: &str) -> Option<ResourceType> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Whether the recovery points are EBS snapshots, which alone have an archive tier.
    pub fn is_ebs_snapshot(self) -> bool {
        matches!(self, ResourceType::Ebs | ResourceType::EbsVolumeSet)
    }
}

/// How long recovery points are kept. A rule that only exports configuration (`route53`,
/// `elbv2`) makes no recovery points and has `Days(0)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Each point expires this many days after it was created.
    Days(u32),
    /// Grandfather-father-son: points survive while they are the newest of one of the last N
    /// days, ISO weeks, months or years that have points (see `Keep::keep`).
    Keep(Keep),
}

impl Retention {
    /// The ways this retention keeps a point: `days`, or each non-zero `keep` tier, with the
    /// shortest and longest time a point kept that way lives. A `keep` tier's point lives from
    /// N periods of their shortest length (a point promoted to no longer tier goes when the
    /// tier moves on) to N of their longest (months of 31 days, years of 366).
    pub fn spans(&self) -> Vec<Span> {
        match *self {
            Retention::Days(days) => {
                vec![Span { field: "days", shortest_days: days.into(), longest_days: days.into() }]
            }
            Retention::Keep(keep) => [
                ("keep.daily", keep.daily, 1, 1),
                ("keep.weekly", keep.weekly, 7, 7),
                ("keep.monthly", keep.monthly, 28, 31),
                ("keep.yearly", keep.yearly, 365, 366),
            ]
            .into_iter()
            .filter(|(_, count, _, _)| *count > 0)
            .map(|(field, count, shortest, longest)| Span {
                field,
                shortest_days: u64::from(count) * shortest,
                longest_days: u64::from(count) * longest,
            })
            .collect(),
        }
    }

    /// The shortest and longest time, in days, that any point is kept: what a lock's bounds
    /// are checked against.
    pub fn bounds_days(&self) -> (u64, u64) {
        let spans = self.spans();
        let shortest = spans.iter().map(|span| span.shortest_days).min().unwrap_or(0);
        let longest = spans.iter().map(|span| span.longest_days).max().unwrap_or(0);
        (shortest, longest)
    }
}

/// One way a retention keeps points (see `Retention::spans`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Under the retention's field: `days`, `keep.weekly`, ...
    pub field: &'static str,
    pub shortest_days: u64,
    pub longest_days: u64,
}

/// Keep-last-N per calendar period, in the rule's time zone; at least one count is non-zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keep {
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
}

/// A copy of every recovery point into another region (and perhaps account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyTo {
    pub region: String,
    /// None: the source's account.
    pub account: Option<String>,
    /// Re-encrypt the copy with this key (id, ARN or alias); None keeps the source's key.
    pub kms_key: Option<String>,
    /// Copies expire on their own schedule, often longer than the source's.
    pub retention: Retention,
}

/// Who may delete a recovery point before its minimum retention.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lock {
    pub mode: LockMode,
    pub min_retention_days: Option<u32>,
    pub max_retention_days: Option<u32>,
    /// EBS snapshots (and copies) are also locked in EC2 for `min_retention_days`.
    pub snapshot_lock: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LockMode {
    /// Points may be deleted whenever their retention says.
    #[default]
    None,
    /// Deleting a point before its minimum retention takes an explicit (logged) override.
    Governance,
    /// Nobody deletes a point before its minimum retention.
    Compliance,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::None => "NONE",
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleOptions {
    /// AMIs are made without rebooting the instance (crash-consistent file systems).
    pub no_reboot: bool,
    /// DynamoDB tables get point-in-time recovery turned on besides their on-demand backups.
    pub continuous: bool,
    pub application_consistent: Option<AppConsistent>,
    /// EBS snapshots move to the archive tier this many days after creation.
    pub cold_after_days: Option<u32>,
}

/// SSM Run Command scripts run on the instance around its snapshots (freeze or flush before,
/// thaw after); when they fail the backup is crash-consistent, with a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppConsistent {
    pub pre: String,
    pub post: String,
}

/// Restore the latest recovery point of `resources` selected resources into an isolated target,
/// check them, time them, and delete them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drill {
    pub resources: u32,
    pub target: DrillTarget,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillTarget {
    pub account: String,
    pub region: String,
    pub subnet: String,
}
