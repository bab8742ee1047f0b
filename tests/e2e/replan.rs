//! A replan never diverges from the first plan: discovery that dies while publishing its work is
//! redelivered the request, republishes the stored plan (not a new listing, though a backup
//! was added in between), and every task of the first plan is restored once.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lifeboat_common::aws::Accounts;
use lifeboat_common::bus::{Bus, BusError, OutgoingMessage, Queue, QueueOptions, Result, WorkSource};
use lifeboat_common::subjects;
use lifeboat_common::validate::Policy;
use lifeboat_discovery::Discovery;
use lifeboat_proto as pb;
use lifeboat_tests::*;
use tokio_util::sync::CancellationToken;

/// A bus whose first publish of work stores only `keep` messages and then fails, as if the
/// process died mid-publish.
struct DiesMidPublish {
    inner: Arc<dyn Bus>,
    keep: usize,
    died: AtomicBool,
    dead: tokio::sync::Notify,
}

#[async_trait]
impl Bus for DiesMidPublish {
    async fn publish(&self, message: OutgoingMessage) -> Result<()> {
        self.inner.publish(message).await
    }

    async fn publish_all(&self, mut messages: Vec<OutgoingMessage>) -> Result<()> {
        let is_work = messages.first().is_some_and(|m| m.subject.starts_with(&subjects::work_subject("")));
        if !is_work || self.died.swap(true, Ordering::SeqCst) {
            return self.inner.publish_all(messages).await;
        }
        messages.truncate(self.keep);
        self.inner.publish_all(messages).await?;
        self.dead.notify_one();
        Err(BusError::Store("died mid-publish".into()))
    }

    async fn notify(&self, message: OutgoingMessage) -> Result<()> {
        self.inner.notify(message).await
    }

    async fn consume(&self, queue: &Queue, options: &QueueOptions) -> Result<Box<dyn WorkSource>> {
        self.inner.consume(queue, options).await
    }

    fn shared(&self) -> Arc<dyn lifeboat_common::shared::SharedStore> {
        self.inner.shared()
    }
}

async fn a_replan_after_a_crash_mid_publish_republishes_the_first_plan(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let east = servers.ec2("us-east-1");
    let at = tick().await;
    for _ in 0..3 {
        let volume = create_volume(&east, "us-east-1a", 1, &[("app", "replan")]).await;
        create_snapshot(&east, &volume, &[("app", "replan")]).await;
    }
    let _services = Running::start(&servers, ServiceSet { discovery: None, ..ServiceSet::default() }).await;

    let bus = servers.shared_bus().await;
    let dying = Arc::new(DiesMidPublish {
        inner: bus.clone(),
        keep: 1,
        died: AtomicBool::new(false),
        dead: Default::default(),
    });
    let accounts = Accounts::new(servers.aws("us-east-1"), lifeboat_common::aws::DEFAULT_ROLE_NAME);
    let first_shutdown = CancellationToken::new();
    let first = tokio::spawn(
        Discovery::new(accounts.clone(), dying.clone(), fast_discovery_config(Policy::default()))
            .run(first_shutdown.clone()),
    );
    let set = ebs_set(
        "set",
        "us-east-1",
        &[("app", "replan")],
        after(at),
        pb::EbsTarget { availability_zone: "us-east-1b".into(), ..Default::default() },
    );
    let client = servers.client().await;
    client.submit(&request("replan-1", vec![set])).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), dying.dead.notified()).await.expect("discovery died");
    first_shutdown.cancel();
    first.await.unwrap().unwrap();

    // A backup completing in between would be a fourth task in a new listing.
    let late = create_volume(&east, "us-east-1a", 1, &[("app", "replan")]).await;
    let late_snapshot = create_snapshot(&east, &late, &[("app", "replan")]).await;
    let shutdown = CancellationToken::new();
    let second =
        tokio::spawn(Discovery::new(accounts, bus, fast_discovery_config(Policy::default())).run(shutdown.clone()));

    let summary = final_summary(&client, "replan-1").await;
    assert_eq!(verdict(&summary), pb::Verdict::Completed);
    assert_eq!(summary.total_tasks, 3);
    assert_eq!(summary.counts.unwrap().succeeded, 3);
    assert!(summary.tasks.iter().all(|t| t.source_backup_id != late_snapshot), "{:?}", summary.tasks);
    let planned: BTreeSet<_> = summary.tasks.iter().map(|t| t.task_id.clone()).collect();
    assert_eq!(planned.len(), 3);
    // Each task restored once: one volume per task id.
    work_drained(&servers, "ebs").await;
    let restored = volumes_tagged(&east, "lifeboat:request-id", "replan-1").await;
    let restored_tasks: Vec<_> = restored.iter().map(|v| tags_of(v)["lifeboat:task-id"].clone()).collect();
    assert_eq!(restored_tasks.len(), 3, "{restored_tasks:?}");
    assert_eq!(restored_tasks.into_iter().collect::<BTreeSet<_>>(), planned);
    shutdown.cancel();
    second.await.unwrap().unwrap();
}

#[tokio::test]
async fn replan_after_crash_mid_publish_over_nats() {
    a_replan_after_a_crash_mid_publish_republishes_the_first_plan(Transport::Nats).await;
}

#[tokio::test]
async fn replan_after_crash_mid_publish_over_sqs() {
    a_replan_after_a_crash_mid_publish_republishes_the_first_plan(Transport::Sqs).await;
}
