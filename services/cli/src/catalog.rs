//! `lifeboat backups list`: the catalog of restorable backups for a source selection, as a
//! table or as JSON. It reads AWS directly (no bus), with the same credentials and roles as the
//! services.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use lifeboat_common::aws::{load_base_config, Accounts};
use lifeboat_discovery::catalog::{self, Entry, Query};
use lifeboat_proto::{ResourceType, Source};
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum BackupsCommand {
    /// Every restorable backup of a source selection, per resource: time, size, type, copies
    /// in other regions, expiry, and point-in-time windows.
    List(ListArgs),
}

#[derive(Args)]
pub struct ListArgs {
    /// `[ACCOUNT/]REGION`, e.g. `us-east-1` or `111122223333/us-east-1` (default: the caller's
    /// account).
    #[arg(long)]
    pub source: String,
    /// `KEY=VALUE`; every tag must match. Repeatable.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// A resource name or id, `*` as a wildcard (`orders*`). Repeatable.
    #[arg(long = "name", value_name = "PATTERN")]
    pub names: Vec<String>,
    /// Resource types (ebs, ec2, rds-instance, rds-cluster, dynamodb); default all. Repeatable.
    #[arg(long = "type", value_name = "TYPE")]
    pub types: Vec<String>,
    /// Regions holding copies (DR regions) to list as well. Repeatable or comma-separated.
    #[arg(long = "copies-in", value_name = "REGION", value_delimiter = ',')]
    pub copies_in: Vec<String>,
    /// The role assumed in another account.
    #[arg(long, env = "LIFEBOAT_ROLE_NAME", default_value = lifeboat_common::aws::DEFAULT_ROLE_NAME)]
    pub role_name: String,
}

impl ListArgs {
    /// The catalog query these arguments describe; errors name the flag.
    pub fn query(&self) -> anyhow::Result<Query> {
        let (account_id, region) = match self.source.split_once('/') {
            Some((account, region)) => (account.to_string(), region.to_string()),
            None => (String::new(), self.source.clone()),
        };
        if !lifeboat_common::validate::is_region(&region) {
            anyhow::bail!("--source: '{region}' is not an AWS region name");
        }
        if !account_id.is_empty() && (account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit())) {
            anyhow::bail!("--source: '{account_id}' is not a 12-digit AWS account id");
        }
        let mut tags = HashMap::new();
        for tag in &self.tags {
            let Some((key, value)) = tag.split_once('=') else {
                anyhow::bail!("--tag: '{tag}' is not KEY=VALUE");
            };
            tags.insert(key.to_string(), value.to_string());
        }
        let mut resource_types = Vec::new();
        for name in &self.types {
            match ResourceType::from_short_name(name) {
                Some(kind) => resource_types.push(kind),
                None => anyhow::bail!(
                    "--type: unknown resource type '{name}' (ebs, ec2, rds-instance, rds-cluster, dynamodb)"
                ),
            }
        }
        for region in &self.copies_in {
            if !lifeboat_common::validate::is_region(region) {
                anyhow::bail!("--copies-in: '{region}' is not an AWS region name");
            }
        }
        let source = Source { account_id, region, tags, names: self.names.clone(), ..Default::default() };
        Ok(Query { source, resource_types, copy_regions: self.copies_in.clone() })
    }
}

/// Lists and prints; the exit code is 0, or the error says what failed.
pub async fn run(args: &ListArgs, json_output: bool) -> anyhow::Result<i32> {
    let query = args.query()?;
    let accounts = Accounts::new(load_base_config().await, args.role_name.clone());
    let entries = catalog::list(&accounts, &query).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    if json_output {
        println!("{}", serde_json::to_string_pretty(&to_json(&entries))?);
    } else {
        println!("{}", table(&entries));
        let resources: std::collections::BTreeSet<_> =
            entries.iter().map(|e| (&e.resource_type, &e.source_resource_id)).collect();
        let size: i64 = entries.iter().filter(|e| e.kind == "backup").map(|e| e.size_gib).sum();
        println!("{} backups of {} resources, {size} GiB", entries.len(), resources.len());
    }
    Ok(0)
}

fn time(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)).unwrap_or_default()
}

pub fn to_json(entries: &[Entry]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| {
                json!({
                    "resourceType": e.resource_type,
                    "accountId": e.account_id,
                    "region": e.region,
                    "sourceResourceId": e.source_resource_id,
                    "backupId": e.backup_id,
                    "kind": e.kind,
                    "createdAt": e.created_at.map(|_| time(e.created_at)),
                    "sizeGib": e.size_gib,
                    "encrypted": e.encrypted,
                    "copiesIn": e.copies_in,
                    "expiresAt": e.expires_at.map(|_| time(e.expires_at)),
                    "note": e.note,
                    "plan": e.plan.as_ref().map(|p| json!({
                        "plan": p.plan,
                        "rule": p.rule,
                        "lock": p.lock,
                        "lockUntil": p.lock_until.map(|_| time(p.lock_until)),
                        "copyOf": p.copy_of,
                    })),
                })
            })
            .collect(),
    )
}

pub fn table(entries: &[Entry]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    table.set_header([
        "type",
        "region",
        "resource",
        "backup",
        "kind",
        "taken",
        "GiB",
        "copies in",
        "expires",
        "plan/rule",
        "lock",
    ]);
    for e in entries {
        table.add_row([
            e.resource_type.clone(),
            e.region.clone(),
            e.source_resource_id.clone(),
            e.backup_id.clone(),
            if e.kind == "continuous" { e.note.clone() } else { e.kind.clone() },
            time(e.created_at),
            if e.kind == "backup" { e.size_gib.to_string() } else { String::new() },
            e.copies_in.join(","),
            time(e.expires_at),
            e.plan.as_ref().map(|p| format!("{}/{}", p.plan, p.rule)).unwrap_or_default(),
            e.plan.as_ref().filter(|p| p.lock != "NONE").map(|p| p.lock.clone()).unwrap_or_default(),
        ]);
    }
    table.to_string()
}
