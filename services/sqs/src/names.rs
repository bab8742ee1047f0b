//! Which SQS queue a subject goes to, and what that queue is called. The subjects come from
//! [`Queue`] (`filter_subject`, `deadletter_subject`), so the mapping cannot drift from the one
//! JetStream uses. The redrive queues have no subject: only SQS's redrive policy writes to them.

use lifeboat_common::bus::{BusError, Queue};
use lifeboat_common::subjects;

use crate::config::SqsConfig;

/// SQS queue names: letters, digits, `-` and `_`, at most 80 characters with `.fifo`.
const MAX_QUEUE_NAME: usize = 80;
const FIFO_SUFFIX: &str = ".fifo";
const DEAD_LETTER_SUFFIX: &str = "-dlq";
const REDRIVE_SUFFIX: &str = "-redrive";

/// Which of a [`Queue`]'s three SQS queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueRole {
    /// Where the queue's subject is published and consumed.
    Main,
    /// The consumer loop's own dead letters (`lifeboat.deadletter.<consumer>`), each with its
    /// reason, kept for an operator to inspect or retry.
    DeadLetter,
    /// The target of the main queue's redrive policy: what SQS moved aside after
    /// `max_receive_count` receives that no handler finished. The queue's consumer reads it and
    /// dead-letters each message with a FAILED report, so these are never kept here.
    Redrive,
}

/// One SQS queue: the main, dead-letter or redrive queue of a [`Queue`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QueueKey {
    pub queue: Queue,
    pub role: QueueRole,
}

impl QueueKey {
    pub fn main(queue: &Queue) -> Self {
        Self { queue: queue.clone(), role: QueueRole::Main }
    }

    pub fn dead_letter(queue: &Queue) -> Self {
        Self { queue: queue.clone(), role: QueueRole::DeadLetter }
    }

    pub fn redrive(queue: &Queue) -> Self {
        Self { queue: queue.clone(), role: QueueRole::Redrive }
    }

    /// The name without prefix or `.fifo`, and the key of [`SqsConfig::queue_overrides`].
    pub fn logical_name(&self) -> String {
        let base = match &self.queue {
            Queue::Requests => "requests".to_string(),
            Queue::Work(_) => self.queue.consumer_name(),
            Queue::StatusEvents => "status-events".to_string(),
        };
        match self.role {
            QueueRole::Main => base,
            QueueRole::DeadLetter => format!("{base}{DEAD_LETTER_SUFFIX}"),
            QueueRole::Redrive => format!("{base}{REDRIVE_SUFFIX}"),
        }
    }

    /// Requests and tasks go to FIFO queues for publish deduplication (a resubmitted request
    /// or a replanned task is stored once); status events go to a standard queue, where a
    /// duplicate costs the aggregator an idempotent no-op and throughput is unbounded. The
    /// dead-letter and redrive queues must be of the same type as their source queue.
    fn default_fifo(&self) -> bool {
        !matches!(self.queue, Queue::StatusEvents)
    }

    /// The subject a message on this queue carries when the sender did not say. A redriven
    /// message is one of the main queue's, moved as it was.
    pub fn default_subject(&self) -> String {
        if self.role == QueueRole::DeadLetter {
            return self.queue.deadletter_subject();
        }
        match &self.queue {
            Queue::StatusEvents => subjects::STATUS_PREFIX.to_string(),
            queue => queue.filter_subject(),
        }
    }
}

/// Where a queue is: a name to look up, or a URL given in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueTarget {
    /// The queue name, also when the configuration gave a URL (its last path segment).
    pub name: String,
    pub url: Option<String>,
    pub fifo: bool,
}

/// The queue a subject is published to; unknown subjects are an error, never a guess.
pub fn route(subject: &str) -> Result<QueueKey, BusError> {
    let unknown = || BusError::Publish {
        subject: subject.to_string(),
        message: "no SQS queue for this subject (the SQS bus carries restore requests, work, status events \
                  and dead letters)"
            .to_string(),
    };
    if subject == Queue::Requests.filter_subject() {
        return Ok(QueueKey::main(&Queue::Requests));
    }
    if let Some(kind) = subject.strip_prefix(subjects::WORK_PREFIX).and_then(|rest| rest.strip_prefix('.')) {
        let queue = Queue::Work(kind.to_string());
        return if !kind.is_empty() && queue.filter_subject() == subject {
            Ok(QueueKey::main(&queue))
        } else {
            Err(unknown())
        };
    }
    if subject.strip_prefix(subjects::STATUS_PREFIX).is_some_and(|rest| rest.len() > 1 && rest.starts_with('.')) {
        return Ok(QueueKey::main(&Queue::StatusEvents));
    }
    for queue in [Queue::Requests, Queue::StatusEvents] {
        if subject == queue.deadletter_subject() {
            return Ok(QueueKey::dead_letter(&queue));
        }
    }
    let work_deadletter = Queue::Work(String::new()).deadletter_subject();
    if let Some(kind) = subject.strip_prefix(work_deadletter.as_str()) {
        let queue = Queue::Work(kind.to_string());
        if !kind.is_empty() && queue.deadletter_subject() == subject {
            return Ok(QueueKey::dead_letter(&queue));
        }
    }
    Err(unknown())
}

/// The queue `key` names under `config`: an override as given, else prefix + logical name
/// (+ `.fifo`).
pub fn target(config: &SqsConfig, key: &QueueKey) -> Result<QueueTarget, BusError> {
    let logical = key.logical_name();
    let target = match config.queue_overrides.get(&logical) {
        Some(given) if given.starts_with("https://") || given.starts_with("http://") => {
            let name = given.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_string();
            QueueTarget { fifo: name.ends_with(FIFO_SUFFIX), name, url: Some(given.clone()) }
        }
        Some(given) => QueueTarget { fifo: given.ends_with(FIFO_SUFFIX), name: given.clone(), url: None },
        None => {
            let fifo = key.default_fifo();
            let suffix = if fifo { FIFO_SUFFIX } else { "" };
            QueueTarget { name: format!("{}{logical}{suffix}", config.queue_prefix), url: None, fifo }
        }
    };
    let stem = target.name.strip_suffix(FIFO_SUFFIX).unwrap_or(&target.name);
    let valid = !stem.is_empty()
        && target.name.len() <= MAX_QUEUE_NAME
        && stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(BusError::Setup {
            what: format!("SQS queue {logical}"),
            message: format!(
                "{:?} is not a valid queue name (letters, digits, '-' and '_', at most {MAX_QUEUE_NAME} characters \
                 with .fifo)",
                target.name
            ),
        });
    }
    Ok(target)
}
