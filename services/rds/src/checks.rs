//! Status checks by identifier, batched: every task of this process waiting on a DB instance,
//! cluster or snapshot in one account and region is answered by one Describe call with an id
//! filter (up to 100 values, RDS's page size), instead of one call per task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_rds::types::{DbCluster, DbClusterSnapshot, DbInstance, DbSnapshot, Filter};
use lifeboat_common::aws::{classify, AwsError};
use lifeboat_common::batch::Batcher;

/// How long a batch collects ids before its Describe call: short next to the seconds between
/// re-checks, long enough for the tasks woken together to meet.
const WINDOW: Duration = Duration::from_millis(50);

/// Values one RDS filter takes, and records one Describe page holds.
const MAX_IDS: usize = 100;

type Client = aws_sdk_rds::Client;

/// The batched lookups of one process, grouped by the account and region of the client asked.
pub struct Checks {
    instances: Batcher<Client, DbInstance>,
    clusters: Batcher<Client, DbCluster>,
    snapshots: Batcher<Client, DbSnapshot>,
    cluster_snapshots: Batcher<Client, DbClusterSnapshot>,
    describe_calls: Arc<AtomicU64>,
}

/// The batch group of a client: its account and region.
pub fn group(account: &str, region: &str) -> String {
    format!("{account}.{region}")
}

fn id_filter(name: &str, ids: Vec<String>) -> Filter {
    Filter::builder().name(name).set_values(Some(ids)).build()
}

impl Default for Checks {
    fn default() -> Self {
        let calls = Arc::new(AtomicU64::new(0));
        let counted = calls.clone();
        let instances = Batcher::new(WINDOW, MAX_IDS, move |rds: Client, ids| {
            counted.fetch_add(1, Ordering::Relaxed);
            async move {
                let described = rds
                    .describe_db_instances()
                    .filters(id_filter("db-instance-id", ids))
                    .max_records(MAX_IDS as i32)
                    .send()
                    .await
                    .map_err(|e| classify("rds:DescribeDBInstances", e))?;
                Ok(by_id(described.db_instances(), |db| db.db_instance_identifier()))
            }
        });
        let counted = calls.clone();
        let clusters = Batcher::new(WINDOW, MAX_IDS, move |rds: Client, ids| {
            counted.fetch_add(1, Ordering::Relaxed);
            async move {
                let described = rds
                    .describe_db_clusters()
                    .filters(id_filter("db-cluster-id", ids))
                    .max_records(MAX_IDS as i32)
                    .send()
                    .await
                    .map_err(|e| classify("rds:DescribeDBClusters", e))?;
                Ok(by_id(described.db_clusters(), |cluster| cluster.db_cluster_identifier()))
            }
        });
        let counted = calls.clone();
        let snapshots = Batcher::new(WINDOW, MAX_IDS, move |rds: Client, ids| {
            counted.fetch_add(1, Ordering::Relaxed);
            async move {
                let described = rds
                    .describe_db_snapshots()
                    .filters(id_filter("db-snapshot-id", ids))
                    .max_records(MAX_IDS as i32)
                    .send()
                    .await
                    .map_err(|e| classify("rds:DescribeDBSnapshots", e))?;
                Ok(by_id(described.db_snapshots(), |snapshot| snapshot.db_snapshot_identifier()))
            }
        });
        let counted = calls.clone();
        let cluster_snapshots = Batcher::new(WINDOW, MAX_IDS, move |rds: Client, ids| {
            counted.fetch_add(1, Ordering::Relaxed);
            async move {
                let described = rds
                    .describe_db_cluster_snapshots()
                    .filters(id_filter("db-cluster-snapshot-id", ids))
                    .max_records(MAX_IDS as i32)
                    .send()
                    .await
                    .map_err(|e| classify("rds:DescribeDBClusterSnapshots", e))?;
                Ok(by_id(described.db_cluster_snapshots(), |snapshot| snapshot.db_cluster_snapshot_identifier()))
            }
        });
        Self { instances, clusters, snapshots, cluster_snapshots, describe_calls: calls }
    }
}

fn by_id<V: Clone>(found: &[V], id: impl Fn(&V) -> Option<&str>) -> HashMap<String, V> {
    found.iter().filter_map(|v| Some((id(v)?.to_string(), v.clone()))).collect()
}

impl Checks {
    /// The DB instance `id` as `rds` (of `group`) sees it; `None` when it does not exist.
    pub async fn instance(&self, group: &str, rds: &Client, id: &str) -> Result<Option<DbInstance>, AwsError> {
        self.instances.get(group, rds.clone(), id).await
    }

    pub async fn cluster(&self, group: &str, rds: &Client, id: &str) -> Result<Option<DbCluster>, AwsError> {
        self.clusters.get(group, rds.clone(), id).await
    }

    pub async fn snapshot(&self, group: &str, rds: &Client, id: &str) -> Result<Option<DbSnapshot>, AwsError> {
        self.snapshots.get(group, rds.clone(), id).await
    }

    pub async fn cluster_snapshot(
        &self,
        group: &str,
        rds: &Client,
        id: &str,
    ) -> Result<Option<DbClusterSnapshot>, AwsError> {
        self.cluster_snapshots.get(group, rds.clone(), id).await
    }

    /// Describe calls made so far, of all four kinds: how many checks the batches saved shows
    /// next to the tasks' count.
    pub fn describe_calls(&self) -> u64 {
        self.describe_calls.load(Ordering::Relaxed)
    }
}
