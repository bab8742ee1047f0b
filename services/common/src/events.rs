//! Building and publishing StatusEvents.

use std::sync::Arc;

use lifeboat_proto::{status_event, RestoreTask, StatusEvent, TargetLocation, TaskPhase};

use crate::bus::{Bus, OutgoingMessage, Result};
use crate::subjects;

/// Publishes a service's StatusEvents.
#[derive(Clone)]
pub struct Reporter {
    bus: Arc<dyn Bus>,
    service: &'static str,
}

impl Reporter {
    pub fn new(bus: Arc<dyn Bus>, service: &'static str) -> Self {
        Self { bus, service }
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    /// Publishes durably. The dedupe id makes a retried publish of the same report a no-op.
    pub async fn report(&self, event: StatusEvent) -> Result<()> {
        self.bus.publish(self.message(event)).await
    }

    pub async fn report_all(&self, events: Vec<StatusEvent>) -> Result<()> {
        self.bus.publish_all(events.into_iter().map(|e| self.message(e)).collect()).await
    }

    fn message(&self, mut event: StatusEvent) -> OutgoingMessage {
        event.service = self.service.to_string();
        if event.at.is_none() {
            event.at = Some(crate::time::now());
        }
        let mut dedupe_id = format!("{}.{}.{}.{}", event.request_id, event_key(&event), event.phase, event.attempt);
        // A retried task reports the same phases and attempts again, as a new generation.
        if event.generation > 0 {
            dedupe_id.push_str(&format!(".g{}", event.generation));
        }
        OutgoingMessage::proto(subjects::status_subject(&event.request_id), &event).dedupe_id(dedupe_id)
    }
}

fn event_key(event: &StatusEvent) -> &str {
    if event.cancelled.is_some() {
        return "cancelled";
    }
    if event.retried.is_some() {
        return "retried";
    }
    match (&event.detail, event.task_id.as_str()) {
        (Some(status_event::Detail::Planned(_)), _) => "planned",
        (Some(status_event::Detail::Rejected(_)), _) => "rejected",
        (None, task_id) => task_id,
    }
}

/// An event about `task` in `phase`, carrying what identifies the task in status tables.
/// The first event of a submitted request, reported by whoever took it (the HTTP API, the
/// NATS client) before publishing it: the aggregator then knows the request even if its plan
/// never comes, and the stall sweep gives it a verdict.
pub fn accepted_event(request_id: &str, service: &str) -> StatusEvent {
    StatusEvent {
        request_id: request_id.to_string(),
        message: "accepted".to_string(),
        at: Some(crate::time::now()),
        service: service.to_string(),
        ..Default::default()
    }
}

pub fn task_event(task: &RestoreTask, phase: TaskPhase, attempt: u32) -> StatusEvent {
    let backup = task.backup.clone().unwrap_or_default();
    StatusEvent {
        request_id: task.request_id.clone(),
        set_name: task.set_name.clone(),
        task_id: task.task_id.clone(),
        resource_type: task.resource_type,
        phase: phase as i32,
        source_backup_id: backup.backup_id,
        source_resource_id: backup.source_resource_id,
        attempt,
        target: Some(target_location(task)),
        selection_reason: task.selection_reason.clone(),
        backup_created_at: backup.created_at,
        generation: task.generation,
        ..Default::default()
    }
}

/// Where the task restores to, with source account and region filled in for empty fields.
pub fn target_location(task: &RestoreTask) -> TargetLocation {
    use lifeboat_proto::restore_task::Target;
    let backup = task.backup.as_ref();
    let (account_id, region, availability_zone) = match &task.target {
        Some(Target::Ebs(t)) => (t.account_id.clone(), t.region.clone(), t.availability_zone.clone()),
        Some(Target::Rds(t)) => (t.account_id.clone(), t.region.clone(), t.availability_zone.clone()),
        Some(Target::Dynamodb(t)) => (t.account_id.clone(), t.region.clone(), String::new()),
        Some(Target::Ec2(t)) => (t.account_id.clone(), t.region.clone(), t.availability_zone.clone()),
        Some(Target::S3(t)) => (t.account_id.clone(), t.region.clone(), String::new()),
        Some(Target::Config(t)) => (t.account_id.clone(), t.region.clone(), String::new()),
        None => Default::default(),
    };
    TargetLocation {
        account_id: if account_id.is_empty() {
            backup.map(|b| b.account_id.clone()).unwrap_or_default()
        } else {
            account_id
        },
        region: if region.is_empty() { backup.map(|b| b.region.clone()).unwrap_or_default() } else { region },
        availability_zone,
    }
}
