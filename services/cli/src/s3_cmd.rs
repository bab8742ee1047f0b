//! `lifeboat s3`: versioned buckets changed in place. `rollback` returns a bucket (or a prefix
//! of it) to its state at a time; `undelete` removes the delete markers placed since a time.
//! Both are restore requests with one S3 set (discovery checks the buckets' versioning and fans
//! the keys out per prefix), submitted like `lifeboat restore submit`; `--dry-run` plans only.

use anyhow::Context;
use chrono::{DateTime, Utc};
use lifeboat_common::validate::{validate_request, Policy};
use lifeboat_proto as pb;

#[derive(Clone, Debug, clap::Subcommand)]
pub enum S3Command {
    /// Return BUCKET (or --prefix of it) to its state at --to: changed objects get their old
    /// version back, objects created since are deleted (a delete marker: nothing is lost),
    /// deleted ones come back. The bucket must have versioning.
    Rollback(RollbackArgs),
    /// Remove the delete markers placed in BUCKET (or under --prefix) since --since.
    Undelete(UndeleteArgs),
}

#[derive(Clone, Debug, clap::Args)]
pub struct BucketArgs {
    pub bucket: String,
    /// Only the keys under this prefix.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// The bucket's account (default: the caller's).
    #[arg(long, default_value = "")]
    pub account: String,
    /// The bucket's region.
    #[arg(long, env = "AWS_REGION")]
    pub region: String,
    /// Plan only: show the tasks, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Follow the request to its verdict (a dry run is always followed).
    #[arg(long)]
    pub watch: bool,
    #[arg(long)]
    pub request_id: Option<String>,
    /// Seconds to watch before giving up.
    #[arg(long)]
    pub timeout: Option<u64>,
}

#[derive(Clone, Debug, clap::Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub bucket: BucketArgs,
    /// The time to return to (RFC 3339, e.g. 2026-12-04T10:00:00Z).
    #[arg(long)]
    pub to: String,
}

#[derive(Clone, Debug, clap::Args)]
pub struct UndeleteArgs {
    #[command(flatten)]
    pub bucket: BucketArgs,
    /// Delete markers placed at or after this time are removed (RFC 3339).
    #[arg(long)]
    pub since: String,
}

impl S3Command {
    pub fn bucket_args(&self) -> &BucketArgs {
        match self {
            S3Command::Rollback(args) => &args.bucket,
            S3Command::Undelete(args) => &args.bucket,
        }
    }

    /// Whether the request is followed to its verdict.
    pub fn follows(&self) -> bool {
        let args = self.bucket_args();
        args.watch || args.dry_run
    }
}

fn parse_time(flag: &str, text: &str) -> anyhow::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .with_context(|| format!("--{flag} {text}: not an RFC 3339 time such as 2026-12-04T10:00:00Z"))
}

/// The restore request of `s3 rollback` / `s3 undelete`, checked as discovery checks it.
pub fn request(command: &S3Command) -> anyhow::Result<pb::RestoreRequest> {
    let (mode, at) = match command {
        S3Command::Rollback(args) => ("rollback", parse_time("to", &args.to)?),
        S3Command::Undelete(args) => ("undelete", parse_time("since", &args.since)?),
    };
    let args = command.bucket_args();
    anyhow::ensure!(!args.bucket.is_empty(), "BUCKET: name the bucket");
    anyhow::ensure!(!args.region.is_empty(), "--region: name the bucket's region (or set AWS_REGION)");
    let set = pb::RestoreSet {
        name: format!("s3-{mode}"),
        source: Some(pb::Source {
            account_id: args.account.clone(),
            region: args.region.clone(),
            names: vec![args.bucket.clone()],
            ..Default::default()
        }),
        resource_types: vec![pb::ResourceType::S3Bucket as i32],
        target: Some(pb::Targets {
            s3: Some(pb::S3Target {
                account_id: args.account.clone(),
                region: args.region.clone(),
                bucket: args.bucket.clone(),
                in_place: Some(pb::S3InPlace {
                    mode: mode.to_string(),
                    at: Some(lifeboat_common::time::to_timestamp(at)),
                    prefix: args.prefix.clone(),
                    shallow: false,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        target_role_arn: String::new(),
    };
    let request = pb::RestoreRequest {
        request_id: args.request_id.clone().unwrap_or_else(lifeboat_common::ids::new_request_id),
        restore_sets: vec![set],
        dry_run: args.dry_run,
        submitted_at: Some(lifeboat_common::time::now()),
        requested_by: std::env::var("USER").unwrap_or_default(),
        ..Default::default()
    };
    if let Err(errors) = validate_request(&request, &Policy::default()) {
        let listed: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
        anyhow::bail!("invalid request: {}", listed.join("; "));
    }
    Ok(request)
}
