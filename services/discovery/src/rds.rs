//! Finding RDS backups: DB snapshots per instance, DB cluster snapshots per Aurora cluster
//! (manual and automated, paginated, selected by their tags and their database's identifier),
//! and for point-in-time sets the instances, retained automated backups of deleted instances
//! and clusters whose restorable window allows the time. The source's settings that a restore
//! does not carry over by itself are captured into `Backup.settings` here, at planning time.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_rds::types::{DbCluster, DbInstance, DbInstanceAutomatedBackup, Tag};
use chrono::{DateTime, Duration, Utc};
use lifeboat_common::aws::{absent_if_not_found, classify, AwsError};
use lifeboat_common::time::{from_aws, to_timestamp};
use lifeboat_proto::{restore_task, Backup, RdsTarget, ResourceType};

use crate::select::{names_match, Candidate};

/// Keys of `Backup.settings` for RDS. The rds service reads the same keys
/// (`lifeboat_rds::settings`); values are strings, lists comma-separated, booleans `true`/`false`.
pub use lifeboat_common::settings::rds as setting;

pub use lifeboat_common::subjects::TAG_RESTORE_COPY;

pub use lifeboat_common::restore::reason::ENCRYPTED_WITHOUT_TARGET_KEY;

fn tags_of(list: &[Tag]) -> HashMap<String, String> {
    list.iter().filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string()))).collect()
}

fn put(settings: &mut HashMap<String, String>, key: &str, value: Option<impl ToString>) {
    if let Some(value) = value.map(|v| v.to_string()).filter(|v| !v.is_empty()) {
        settings.insert(key.to_string(), value);
    }
}

fn put_list(settings: &mut HashMap<String, String>, key: &str, values: &[String]) {
    if !values.is_empty() {
        settings.insert(key.to_string(), values.join(","));
    }
}

/// The settings of a live DB instance that a restore does not carry over by itself.
pub fn instance_settings(db: &DbInstance) -> HashMap<String, String> {
    let mut s = HashMap::new();
    put(&mut s, setting::ENGINE, db.engine());
    put(&mut s, setting::ENGINE_VERSION, db.engine_version());
    put(
        &mut s,
        setting::DB_PARAMETER_GROUP,
        db.db_parameter_groups().first().and_then(|g| g.db_parameter_group_name()),
    );
    put(&mut s, setting::OPTION_GROUP, db.option_group_memberships().first().and_then(|g| g.option_group_name()));
    put(&mut s, setting::MULTI_AZ, db.multi_az());
    put(&mut s, setting::STORAGE_TYPE, db.storage_type());
    put(&mut s, setting::IOPS, db.iops());
    put(&mut s, setting::STORAGE_THROUGHPUT, db.storage_throughput());
    put(&mut s, setting::PORT, db.endpoint().and_then(|e| e.port()).or(db.db_instance_port().filter(|p| *p > 0)));
    put(&mut s, setting::DELETION_PROTECTION, db.deletion_protection());
    put(&mut s, setting::IAM_AUTH, db.iam_database_authentication_enabled());
    put(&mut s, setting::COPY_TAGS_TO_SNAPSHOT, db.copy_tags_to_snapshot());
    put_list(&mut s, setting::LOG_EXPORTS, db.enabled_cloudwatch_logs_exports());
    put(&mut s, setting::INSTANCE_CLASS, db.db_instance_class());
    put(&mut s, setting::DB_SUBNET_GROUP, db.db_subnet_group().and_then(|g| g.db_subnet_group_name()));
    let groups: Vec<String> =
        db.vpc_security_groups().iter().filter_map(|g| g.vpc_security_group_id().map(str::to_string)).collect();
    put_list(&mut s, setting::SECURITY_GROUP_IDS, &groups);
    if db.multi_az() != Some(true) {
        put(&mut s, setting::AVAILABILITY_ZONE, db.availability_zone());
    }
    s
}

/// The settings of a live Aurora cluster, and of its writer when `writer` is given.
pub fn cluster_settings(cluster: &DbCluster, writer: Option<&DbInstance>) -> HashMap<String, String> {
    let mut s = HashMap::new();
    put(&mut s, setting::ENGINE, cluster.engine());
    put(&mut s, setting::ENGINE_VERSION, cluster.engine_version());
    put(&mut s, setting::DB_CLUSTER_PARAMETER_GROUP, cluster.db_cluster_parameter_group());
    put(&mut s, setting::PORT, cluster.port());
    put(&mut s, setting::DELETION_PROTECTION, cluster.deletion_protection());
    put(&mut s, setting::IAM_AUTH, cluster.iam_database_authentication_enabled());
    put(&mut s, setting::COPY_TAGS_TO_SNAPSHOT, cluster.copy_tags_to_snapshot());
    put_list(&mut s, setting::LOG_EXPORTS, cluster.enabled_cloudwatch_logs_exports());
    put(&mut s, setting::DB_SUBNET_GROUP, cluster.db_subnet_group());
    let groups: Vec<String> =
        cluster.vpc_security_groups().iter().filter_map(|g| g.vpc_security_group_id().map(str::to_string)).collect();
    put_list(&mut s, setting::SECURITY_GROUP_IDS, &groups);
    if let Some(writer) = writer {
        put(&mut s, setting::WRITER_INSTANCE_CLASS, writer.db_instance_class());
        let group = writer.db_parameter_groups().first().and_then(|g| g.db_parameter_group_name());
        put(&mut s, setting::DB_PARAMETER_GROUP, group);
    }
    s
}

/// Everything about a source that the restore needs, captured now.
struct Source<'a> {
    kind: ResourceType,
    id: &'a str,
    account_id: &'a str,
    region: &'a str,
    tags: HashMap<String, String>,
    settings: HashMap<String, String>,
}

impl Source<'_> {
    fn backup(&self, backup_id: &str, created_at: DateTime<Utc>, encrypted: bool, kms_key_id: &str) -> Backup {
        Backup {
            backup_id: backup_id.to_string(),
            resource_type: self.kind as i32,
            source_resource_id: self.id.to_string(),
            account_id: self.account_id.to_string(),
            region: self.region.to_string(),
            created_at: Some(to_timestamp(created_at)),
            tags: self.tags.clone(),
            settings: self.settings.clone(),
            encrypted,
            kms_key_id: kms_key_id.to_string(),
            ..Default::default()
        }
    }
}

/// What both kinds of RDS snapshot say about themselves.
struct Snapshot<'a> {
    id: Option<&'a str>,
    /// The instance or cluster it was taken of.
    source: Option<&'a str>,
    created: Option<DateTime<Utc>>,
    status: Option<&'a str>,
    tags: &'a [Tag],
    encrypted: bool,
    kms_key_id: &'a str,
    size_gib: i64,
    settings: HashMap<String, String>,
}

/// What a restore set selects: all of `tags` and a database identifier matching `names`.
pub struct Selection<'a> {
    pub tags: &'a HashMap<String, String>,
    pub names: &'a [String],
}

impl Selection<'_> {
    fn matches(&self, id: &str, tags: &HashMap<String, String>) -> bool {
        crate::select::tags_match(self.tags, tags) && names_match(self.names, &[id])
    }
}

/// The candidate and backup of an available snapshot the selection wants; Lifeboat's own
/// restore-time copies are never candidates.
fn selected(
    kind: ResourceType,
    snapshot: Snapshot<'_>,
    account_id: &str,
    region: &str,
    selection: &Selection<'_>,
) -> Option<(Candidate, Backup)> {
    let (Some(id), Some(source_id), Some(created)) = (snapshot.id, snapshot.source, snapshot.created) else {
        return None;
    };
    let tags = tags_of(snapshot.tags);
    if snapshot.status != Some("available")
        || tags.contains_key(TAG_RESTORE_COPY)
        || !selection.matches(source_id, &tags)
    {
        return None;
    }
    let source = Source { kind, id: source_id, account_id, region, tags: tags.clone(), settings: snapshot.settings };
    let mut backup = source.backup(id, created, snapshot.encrypted, snapshot.kms_key_id);
    backup.size_gib = snapshot.size_gib;
    let candidate =
        Candidate { backup_id: id.to_string(), source_resource_id: source_id.to_string(), created_at: created, tags };
    Some((candidate, backup))
}

/// Available DB snapshots (of instances) the selection wants.
pub async fn instance_snapshots(
    rds: &aws_sdk_rds::Client,
    account_id: &str,
    region: &str,
    selection: &Selection<'_>,
) -> Result<Vec<(Candidate, Backup)>, AwsError> {
    let mut found = Vec::new();
    let mut pages = rds.describe_db_snapshots().into_paginator().send();
    while let Some(page) = pages.next().await {
        for snapshot in page.map_err(|e| classify("rds:DescribeDBSnapshots", e))?.db_snapshots() {
            let mut settings = HashMap::new();
            put(&mut settings, setting::ENGINE, snapshot.engine());
            put(&mut settings, setting::ENGINE_VERSION, snapshot.engine_version());
            put(&mut settings, setting::SNAPSHOT_TYPE, snapshot.snapshot_type());
            put(&mut settings, setting::PORT, snapshot.port().filter(|p| *p > 0));
            put(&mut settings, setting::STORAGE_TYPE, snapshot.storage_type());
            put(&mut settings, setting::IOPS, snapshot.iops());
            put(&mut settings, setting::STORAGE_THROUGHPUT, snapshot.storage_throughput());
            put(&mut settings, setting::OPTION_GROUP, snapshot.option_group_name());
            put(&mut settings, setting::IAM_AUTH, snapshot.iam_database_authentication_enabled());
            put(&mut settings, setting::AVAILABILITY_ZONE, snapshot.availability_zone());
            let fields = Snapshot {
                id: snapshot.db_snapshot_identifier(),
                source: snapshot.db_instance_identifier(),
                created: snapshot.snapshot_create_time().and_then(from_aws),
                status: snapshot.status(),
                tags: snapshot.tag_list(),
                encrypted: snapshot.encrypted().unwrap_or_default(),
                kms_key_id: snapshot.kms_key_id().unwrap_or_default(),
                size_gib: snapshot.allocated_storage().unwrap_or_default().into(),
                settings,
            };
            found.extend(selected(ResourceType::RdsInstance, fields, account_id, region, selection));
        }
    }
    Ok(found)
}

/// Available DB cluster snapshots (Aurora) the selection wants.
pub async fn cluster_snapshots(
    rds: &aws_sdk_rds::Client,
    account_id: &str,
    region: &str,
    selection: &Selection<'_>,
) -> Result<Vec<(Candidate, Backup)>, AwsError> {
    let mut found = Vec::new();
    let mut pages = rds.describe_db_cluster_snapshots().into_paginator().send();
    while let Some(page) = pages.next().await {
        for snapshot in page.map_err(|e| classify("rds:DescribeDBClusterSnapshots", e))?.db_cluster_snapshots() {
            let mut settings = HashMap::new();
            put(&mut settings, setting::ENGINE, snapshot.engine());
            put(&mut settings, setting::ENGINE_VERSION, snapshot.engine_version());
            put(&mut settings, setting::SNAPSHOT_TYPE, snapshot.snapshot_type());
            put(&mut settings, setting::PORT, snapshot.port().filter(|p| *p > 0));
            put(&mut settings, setting::IAM_AUTH, snapshot.iam_database_authentication_enabled());
            let fields = Snapshot {
                id: snapshot.db_cluster_snapshot_identifier(),
                source: snapshot.db_cluster_identifier(),
                created: snapshot.snapshot_create_time().and_then(from_aws),
                status: snapshot.status(),
                tags: snapshot.tag_list(),
                encrypted: snapshot.storage_encrypted().unwrap_or_default(),
                kms_key_id: snapshot.kms_key_id().unwrap_or_default(),
                size_gib: snapshot.allocated_storage().unwrap_or_default().into(),
                settings,
            };
            found.extend(selected(ResourceType::RdsCluster, fields, account_id, region, selection));
        }
    }
    Ok(found)
}

async fn describe_instance(rds: &aws_sdk_rds::Client, id: &str) -> Result<Option<DbInstance>, AwsError> {
    let described = rds.describe_db_instances().db_instance_identifier(id).send().await;
    let found = absent_if_not_found(
        described.map_err(|e| classify("rds:DescribeDBInstances", e)),
        &["DBInstanceNotFound", "DBInstanceNotFoundFault"],
    )?;
    Ok(found.and_then(|output| output.db_instances().first().cloned()))
}

async fn describe_cluster(rds: &aws_sdk_rds::Client, id: &str) -> Result<Option<DbCluster>, AwsError> {
    let described = rds.describe_db_clusters().db_cluster_identifier(id).send().await;
    let found = absent_if_not_found(
        described.map_err(|e| classify("rds:DescribeDBClusters", e)),
        &["DBClusterNotFoundFault", "DBClusterNotFound"],
    )?;
    Ok(found.and_then(|output| output.db_clusters().first().cloned()))
}

/// The writer member of a cluster, described by its identifier.
async fn writer_of(rds: &aws_sdk_rds::Client, cluster: &DbCluster) -> Result<Option<DbInstance>, AwsError> {
    let writer = cluster.db_cluster_members().iter().find(|m| m.is_cluster_writer() == Some(true));
    match writer.and_then(|m| m.db_instance_identifier()) {
        Some(id) => describe_instance(rds, id).await,
        None => Ok(None),
    }
}

/// Adds the settings of each picked backup's source database, described once per database by
/// its identifier (a deleted one keeps what its snapshot says). The snapshot's own values win:
/// they are what the backup holds.
pub async fn capture_sources(
    rds: &aws_sdk_rds::Client,
    kind: ResourceType,
    backups: &mut [(Backup, String)],
) -> Result<(), AwsError> {
    let sources: BTreeSet<String> = backups.iter().map(|(b, _)| b.source_resource_id.clone()).collect();
    let mut captured: HashMap<String, HashMap<String, String>> = HashMap::new();
    for id in sources {
        let settings = if kind == ResourceType::RdsCluster {
            match describe_cluster(rds, &id).await? {
                Some(cluster) => Some(cluster_settings(&cluster, writer_of(rds, &cluster).await?.as_ref())),
                None => None,
            }
        } else {
            describe_instance(rds, &id).await?.map(|db| instance_settings(&db))
        };
        captured.extend(settings.map(|s| (id, s)));
    }
    for (backup, _) in backups.iter_mut() {
        if let Some(source) = captured.get(&backup.source_resource_id) {
            for (key, value) in source {
                backup.settings.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
    }
    Ok(())
}

/// An instance or cluster (or a deleted instance's retained automated backups) and its
/// restorable window.
struct Restorable {
    id: String,
    /// The ARN restored from: the instance or cluster, or the retained automated backups.
    arn: String,
    tags: HashMap<String, String>,
    earliest: Option<DateTime<Utc>>,
    latest: Option<DateTime<Utc>>,
    encrypted: bool,
    kms_key_id: String,
    settings: HashMap<String, String>,
}

/// The restorable window of a DB instance: its automated backups' restore window when RDS
/// reports one; otherwise the backup retention period back from the latest restorable time
/// (never before the instance existed).
pub fn instance_window(
    db: &DbInstance,
    automated: Option<&DbInstanceAutomatedBackup>,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let window = automated.and_then(|a| a.restore_window());
    let latest =
        db.latest_restorable_time().and_then(from_aws).or(window.and_then(|w| w.latest_time()).and_then(from_aws));
    let earliest = window.and_then(|w| w.earliest_time()).and_then(from_aws).or_else(|| {
        let retention = db.backup_retention_period().filter(|d| *d > 0)?;
        let earliest = latest? - Duration::days(retention.into());
        Some(match db.instance_create_time().and_then(from_aws) {
            Some(created) => earliest.max(created),
            None => earliest,
        })
    });
    (earliest, latest)
}

/// The restorable window of a deleted instance's retained automated backups.
pub fn retained_window(automated: &DbInstanceAutomatedBackup) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let window = automated.restore_window();
    (window.and_then(|w| w.earliest_time()).and_then(from_aws), window.and_then(|w| w.latest_time()).and_then(from_aws))
}

fn retained_settings(automated: &DbInstanceAutomatedBackup) -> HashMap<String, String> {
    let mut s = HashMap::new();
    put(&mut s, setting::ENGINE, automated.engine());
    put(&mut s, setting::ENGINE_VERSION, automated.engine_version());
    put(&mut s, setting::PORT, automated.port().filter(|p| *p > 0));
    put(&mut s, setting::STORAGE_TYPE, automated.storage_type());
    put(&mut s, setting::IOPS, automated.iops());
    put(&mut s, setting::STORAGE_THROUGHPUT, automated.storage_throughput());
    put(&mut s, setting::OPTION_GROUP, automated.option_group_name());
    put(&mut s, setting::IAM_AUTH, automated.iam_database_authentication_enabled());
    put(&mut s, setting::AVAILABILITY_ZONE, automated.availability_zone());
    put(&mut s, setting::AUTOMATED_BACKUPS_ARN, automated.db_instance_automated_backups_arn());
    s
}

/// Where to restore a DB instance to: for a forward search (`after`) the earliest restorable
/// time at or after `at` (and at or before `until`), otherwise the latest at or before `at`.
pub fn restore_time(
    earliest: DateTime<Utc>,
    latest: DateTime<Utc>,
    at: DateTime<Utc>,
    after: bool,
    until: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let restore_to = if after { at.max(earliest) } else { at.min(latest) };
    let in_window = restore_to >= earliest && restore_to <= latest;
    (in_window && until.is_none_or(|until| restore_to <= until)).then_some(restore_to)
}

/// Point-in-time restores of the instances (or clusters) the selection wants, including
/// deleted instances whose automated backups were retained.
#[allow(clippy::too_many_arguments)]
pub async fn point_in_time(
    rds: &aws_sdk_rds::Client,
    kind: ResourceType,
    account_id: &str,
    region: &str,
    selection: &Selection<'_>,
    at: DateTime<Utc>,
    after: bool,
    until: Option<DateTime<Utc>>,
) -> Result<Vec<(Backup, String)>, AwsError> {
    let mut sources: Vec<Restorable> = Vec::new();
    if kind == ResourceType::RdsCluster {
        let mut pages = rds.describe_db_clusters().into_paginator().send();
        while let Some(page) = pages.next().await {
            for cluster in page.map_err(|e| classify("rds:DescribeDBClusters", e))?.db_clusters() {
                let id = cluster.db_cluster_identifier().unwrap_or_default().to_string();
                let tags = tags_of(cluster.tag_list());
                if !selection.matches(&id, &tags) {
                    continue;
                }
                let writer = writer_of(rds, cluster).await?;
                sources.push(Restorable {
                    arn: cluster.db_cluster_arn().unwrap_or(&id).to_string(),
                    id,
                    tags,
                    earliest: cluster.earliest_restorable_time().and_then(from_aws),
                    latest: cluster.latest_restorable_time().and_then(from_aws),
                    encrypted: cluster.storage_encrypted().unwrap_or_default(),
                    kms_key_id: cluster.kms_key_id().unwrap_or_default().to_string(),
                    settings: cluster_settings(cluster, writer.as_ref()),
                });
            }
        }
    } else {
        // One listing of the automated backups: the windows of live instances, and the
        // retained backups of deleted ones.
        let mut automated: HashMap<String, DbInstanceAutomatedBackup> = HashMap::new();
        let mut pages = rds.describe_db_instance_automated_backups().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("rds:DescribeDBInstanceAutomatedBackups", e))?;
            for backup in page.db_instance_automated_backups() {
                if let Some(id) = backup.db_instance_identifier() {
                    // A live instance's own (`active`) backups win over older retained ones.
                    let keep = automated.get(id).is_none_or(|b| b.status() != Some("active"));
                    if keep {
                        automated.insert(id.to_string(), backup.clone());
                    }
                }
            }
        }
        let mut pages = rds.describe_db_instances().into_paginator().send();
        while let Some(page) = pages.next().await {
            for db in page.map_err(|e| classify("rds:DescribeDBInstances", e))?.db_instances() {
                let id = db.db_instance_identifier().unwrap_or_default().to_string();
                let own = automated.remove(&id);
                if db.db_cluster_identifier().is_some() || db.backup_retention_period() == Some(0) {
                    continue; // cluster members restore with their cluster; no retention, no PITR
                }
                let tags = tags_of(db.tag_list());
                if !selection.matches(&id, &tags) {
                    continue;
                }
                let (earliest, latest) = instance_window(db, own.as_ref());
                sources.push(Restorable {
                    arn: db.db_instance_arn().unwrap_or(&id).to_string(),
                    id,
                    tags,
                    earliest,
                    latest,
                    encrypted: db.storage_encrypted().unwrap_or_default(),
                    kms_key_id: db.kms_key_id().unwrap_or_default().to_string(),
                    settings: instance_settings(db),
                });
            }
        }
        // What is left belongs to instances that no longer exist.
        for (id, backup) in automated {
            let tags = tags_of(backup.tag_list());
            if backup.status() != Some("retained") || !selection.matches(&id, &tags) {
                continue;
            }
            let Some(arn) = backup.db_instance_automated_backups_arn() else { continue };
            let (earliest, latest) = retained_window(&backup);
            sources.push(Restorable {
                arn: arn.to_string(),
                id,
                tags,
                earliest,
                latest,
                encrypted: backup.encrypted().unwrap_or_default(),
                kms_key_id: backup.kms_key_id().unwrap_or_default().to_string(),
                settings: retained_settings(&backup),
            });
        }
    }
    sources.sort_by(|a, b| a.id.cmp(&b.id));
    let mut found = Vec::new();
    for Restorable { id, arn, tags, earliest, latest, encrypted, kms_key_id, settings } in sources {
        let (Some(earliest), Some(latest)) = (earliest, latest) else { continue };
        let Some(restore_to) = restore_time(earliest, latest, at, after, until) else { continue };
        let deleted = settings.contains_key(setting::AUTOMATED_BACKUPS_ARN);
        let source = Source { kind, id: &id, account_id, region, tags, settings };
        let mut backup = source.backup(&arn, restore_to, encrypted, &kms_key_id);
        backup.restore_time = Some(to_timestamp(restore_to));
        let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let from = if deleted { " from the retained automated backups of the deleted instance" } else { "" };
        found.push((
            backup,
            format!(
                "point-in-time recovery to {} (restorable {} .. {}){from}",
                fmt(restore_to),
                fmt(earliest),
                fmt(latest)
            ),
        ));
    }
    Ok(found)
}

/// The target of each picked RDS backup. Identifiers are the set's `name` (or, in another
/// account, the source's), suffixed by the source when several databases match and by the
/// backup's time when several backups of one database do (a window), so every task has its
/// own stable identifier. In the source's account and region, what the target leaves empty is
/// inherited from the source: DB subnet group, security groups (with the subnet group), zone.
pub fn targets(
    set_name: &str,
    source_account: &str,
    source_region: &str,
    target: RdsTarget,
    picked: Vec<(Backup, String)>,
) -> Result<Vec<(Backup, restore_task::Target, String)>, AwsError> {
    let same_account = target.account_id == source_account;
    let same_place = same_account && target.region == source_region;
    if !same_account && target.kms_key_id.is_empty() {
        // Only a key KMS says is the customer's can be shared; an unknown one is refused too.
        if let Some((backup, _)) = picked.iter().find(|(b, _)| b.encrypted && !crate::keys::is_customer_managed(b)) {
            return Err(AwsError::task_failure(
                "plan",
                ENCRYPTED_WITHOUT_TARGET_KEY,
                format!(
                    "set '{}': {} of {} is encrypted (key {}); a snapshot encrypted with the default aws/rds key \
                     cannot be shared with account {}: give target.rds.kms_key_id, a customer managed key the target \
                     account may use, to re-encrypt the shared copy",
                    set_name,
                    backup.backup_id,
                    backup.source_resource_id,
                    if backup.kms_key_id.is_empty() { "unknown" } else { &backup.kms_key_id },
                    target.account_id
                ),
            ));
        }
    }
    let mut per_source: HashMap<&str, usize> = HashMap::new();
    for (backup, _) in &picked {
        *per_source.entry(backup.source_resource_id.as_str()).or_default() += 1;
    }
    let several_sources = per_source.len() > 1;
    let per_source: HashMap<String, usize> = per_source.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    Ok(picked
        .into_iter()
        .map(|(backup, why)| {
            let mut target = target.clone();
            let source_id = backup.source_resource_id.clone();
            let mut name = match (target.name.is_empty(), several_sources) {
                (true, _) => source_id.clone(),
                (false, true) => format!("{}-{source_id}", target.name),
                (false, false) => target.name.clone(),
            };
            if per_source[&source_id] > 1 {
                let at = backup.restore_time.as_ref().or(backup.created_at.as_ref());
                let at = at.and_then(lifeboat_common::time::from_timestamp);
                name = format!("{name}-{}", at.map(|t| t.format("%Y%m%d%H%M%S").to_string()).unwrap_or_default());
            }
            target.name = crate::service::rds_identifier(&name, &backup.backup_id);
            if same_place {
                let inherited = |key: &str| backup.settings.get(key).cloned().unwrap_or_default();
                if target.db_subnet_group.is_empty() {
                    target.db_subnet_group = inherited(setting::DB_SUBNET_GROUP);
                    if target.security_group_ids.is_empty() {
                        target.security_group_ids = inherited(setting::SECURITY_GROUP_IDS)
                            .split(',')
                            .filter(|g| !g.is_empty())
                            .map(str::to_string)
                            .collect();
                    }
                }
                let multi_az = target.multi_az.unwrap_or(inherited(setting::MULTI_AZ) == "true");
                if target.availability_zone.is_empty() && !multi_az {
                    target.availability_zone = inherited(setting::AVAILABILITY_ZONE);
                }
            }
            (backup, restore_task::Target::Rds(target), why)
        })
        .collect())
}
