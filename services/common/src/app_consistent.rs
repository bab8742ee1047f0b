//! Application-consistent backups (the backup whitepaper's "consistent or hot backups"): the
//! plan's pre script (freeze, flush) runs on the instance through SSM Run Command before its
//! snapshots or AMI are taken, and its post script (thaw) right after. A script that fails, or
//! that SSM will not run (the instance is not managed), never blocks the backup: the points are
//! taken crash-consistent and the task finishes with a warning that says why.
//!
//! Each script is sent at most once per task: its command id goes into the task's progress as
//! soon as SendCommand returns, later steps check it by id (GetCommandInvocation), and how it
//! ended is recorded once it has. A delivery that died between SendCommand and its record is
//! covered by one ListCommands of the instance (by the command's comment, which names the task)
//! before a later delivery sends. SSM calls take no quota token: Lifeboat's shared quotas have
//! no SSM family, and a backup makes a handful of calls per instance.

use aws_sdk_ssm::types::CommandInvocationStatus;
use lifeboat_proto::{BackupOptions, BackupTask, RestoreTask};
use tracing::warn;

use crate::aws::{classify, ssm_client, Accounts, AwsError};
use crate::restore::Progress;

/// On the points of a backup whose plan asks for scripts: `application` when the pre script
/// succeeded and the post script had not been sent when they were taken, `crash` otherwise.
pub const TAG_CONSISTENCY: &str = "lifeboat:consistency";

/// The progress role of the consistency the points were taken with (their copies carry it too).
pub const ROLE_CONSISTENCY: &str = "consistency";

/// The SSM document that runs a shell script on Linux instances.
pub const DOCUMENT: &str = "AWS-RunShellScript";

/// How much of a failed script's standard error a warning quotes.
const STDERR_EXCERPT: usize = 300;

/// Which of the two scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pre,
    Post,
}

impl Phase {
    /// The progress role of its command id (`ssm:pre`, `ssm:post`).
    pub fn role(self) -> &'static str {
        match self {
            Phase::Pre => "ssm:pre",
            Phase::Post => "ssm:post",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Phase::Pre => "pre",
            Phase::Post => "post",
        }
    }

    /// Roles of how it ended: succeeded (the command id), failed or refused (why).
    fn ended_role(self, how: &str) -> String {
        format!("{}:{how}", self.role())
    }
}

/// How the points of a backup were taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    Application,
    Crash,
}

impl Consistency {
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Application => "application",
            Consistency::Crash => "crash",
        }
    }

    /// As recorded when the task's points were taken; None when the plan asks for no scripts.
    pub fn recorded(progress: &Progress) -> Option<Self> {
        match progress.id(ROLE_CONSISTENCY)? {
            "application" => Some(Consistency::Application),
            _ => Some(Consistency::Crash),
        }
    }

    /// The [`TAG_CONSISTENCY`] tag of the task's points, when the plan asks for scripts.
    pub fn tag(progress: &Progress) -> Option<(String, String)> {
        Self::recorded(progress).map(|c| (TAG_CONSISTENCY.to_string(), c.as_str().to_string()))
    }
}

/// Where a script stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Script {
    /// The plan has none for this phase.
    NotAsked,
    NotSent,
    Running {
        command_id: String,
        status: String,
    },
    Succeeded,
    /// It ran and did not succeed: why.
    Failed(String),
    /// SSM would not run it (the instance is not managed, or not there): why.
    Refused(String),
}

/// Before the points are taken: the pre script is still running, or they can be taken now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prepared {
    Waiting(String),
    Ready(Consistency),
}

/// A backup's scripts and the instance they run on.
pub struct Scripts {
    ssm: aws_sdk_ssm::Client,
    instance_id: String,
    pre: String,
    post: String,
}

impl Scripts {
    /// The scripts of the backup `job`, with an SSM client in the instance's account and
    /// region; None when the plan asks for none (no pre script).
    pub async fn for_job(accounts: &Accounts, job: &BackupTask) -> Result<Option<Self>, AwsError> {
        if options(job).is_none() {
            return Ok(None);
        }
        let config = accounts.config_for(&job.account_id, &job.region).await?;
        Ok(Self::new(ssm_client(&config, &job.account_id, &job.region), job))
    }

    /// The scripts of the backup `job` run through `ssm`; None when the plan asks for none.
    pub fn new(ssm: aws_sdk_ssm::Client, job: &BackupTask) -> Option<Self> {
        let options = options(job)?;
        Some(Self {
            ssm,
            instance_id: job.resource_id.clone(),
            pre: options.pre_script.clone(),
            post: options.post_script.clone(),
        })
    }

    fn script(&self, phase: Phase) -> &str {
        match phase {
            Phase::Pre => &self.pre,
            Phase::Post => &self.post,
        }
    }

    /// The pre script, sent once and waited for. Ready once it has ended either way (or SSM
    /// refused it), with the consistency points taken now have, recorded: application only when
    /// it succeeded and the thaw has not been sent (a snapshot call that failed sends it).
    pub async fn prepare(
        &self,
        task: &RestoreTask,
        attempt: u32,
        progress: &mut Progress,
    ) -> Result<Prepared, AwsError> {
        let pre = self.start(task, Phase::Pre, attempt, progress).await?;
        if let Script::Running { command_id, status } = pre {
            return Ok(Prepared::Waiting(format!(
                "pre script (command {command_id}) on {} is {status}",
                self.instance_id
            )));
        }
        let thawed =
            progress.id(Phase::Post.role()).is_some() || progress.id(&Phase::Post.ended_role("refused")).is_some();
        let consistency =
            if pre == Script::Succeeded && !thawed { Consistency::Application } else { Consistency::Crash };
        progress.record(ROLE_CONSISTENCY, consistency.as_str());
        Ok(Prepared::Ready(consistency))
    }

    /// The post script once the pre script has gone out: sent once (right after the points are
    /// taken, or after a snapshot call that failed, so the instance is never left frozen), then
    /// checked. Not sent when SSM refused the pre script: it would refuse this one too.
    pub async fn finish(&self, task: &RestoreTask, attempt: u32, progress: &mut Progress) -> Result<Script, AwsError> {
        match self.check(Phase::Pre, progress).await? {
            Script::NotSent | Script::Refused(_) => Ok(Script::NotAsked),
            _ => self.start(task, Phase::Post, attempt, progress).await,
        }
    }

    /// Whether the pre script was sent and is not known to have ended: the points cannot have
    /// been taken yet, so a step need not look for ones an earlier delivery lost.
    pub fn pre_running(&self, progress: &Progress) -> bool {
        let ended =
            ["succeeded", "failed", "refused"].iter().any(|how| progress.id(&Phase::Pre.ended_role(how)).is_some());
        progress.id(Phase::Pre.role()).is_some() && !ended
    }

    /// [`Scripts::finish`] on a path that is already failing the task (the snapshot call
    /// failed, or the completion window ended): the thaw is sent, an error sending it logged.
    pub async fn thaw(&self, task: &RestoreTask, attempt: u32, progress: &mut Progress) {
        if let Err(e) = self.finish(task, attempt, progress).await {
            warn!(task_id = %task.task_id, instance = %self.instance_id, error = %e, "cannot send the post script");
        }
    }

    /// What the scripts' record says the user should know: a pre script that failed (the
    /// backup is crash-consistent), a post script that failed.
    pub fn warnings(&self, progress: &Progress) -> Vec<String> {
        let mut warnings = Vec::new();
        for phase in [Phase::Pre, Phase::Post] {
            for how in ["failed", "refused"] {
                if let Some(why) = progress.id(&phase.ended_role(how)) {
                    warnings.push(match phase {
                        Phase::Pre => format!("{why}; backed up crash-consistent"),
                        Phase::Post => why.to_string(),
                    });
                }
            }
        }
        warnings
    }

    /// Where `phase`'s script stands: from its record once it has ended, else by
    /// GetCommandInvocation of its recorded command (how it ended is then recorded).
    pub async fn check(&self, phase: Phase, progress: &mut Progress) -> Result<Script, AwsError> {
        if self.script(phase).is_empty() {
            return Ok(Script::NotAsked);
        }
        if progress.id(&phase.ended_role("succeeded")).is_some() {
            return Ok(Script::Succeeded);
        }
        if let Some(why) = progress.id(&phase.ended_role("failed")) {
            return Ok(Script::Failed(why.to_string()));
        }
        if let Some(why) = progress.id(&phase.ended_role("refused")) {
            return Ok(Script::Refused(why.to_string()));
        }
        let Some(command_id) = progress.id(phase.role()).map(str::to_string) else {
            return Ok(Script::NotSent);
        };
        let script = self.invocation(phase, &command_id).await?;
        match &script {
            Script::Succeeded => progress.record(&phase.ended_role("succeeded"), command_id),
            Script::Failed(why) => progress.record(&phase.ended_role("failed"), why.clone()),
            _ => {}
        }
        Ok(script)
    }

    /// Sends `phase`'s script unless it was sent before (recorded, or found by its comment on a
    /// later delivery), and records its command id at once. A refusal is recorded as the
    /// script's end: it is not sent again.
    async fn start(
        &self,
        task: &RestoreTask,
        phase: Phase,
        attempt: u32,
        progress: &mut Progress,
    ) -> Result<Script, AwsError> {
        let current = self.check(phase, progress).await?;
        if current != Script::NotSent {
            return Ok(current);
        }
        let comment = comment(task, phase);
        if attempt > 1 {
            if let Some(command_id) = self.sent_before(&comment).await? {
                progress.record(phase.role(), command_id);
                return self.check(phase, progress).await;
            }
        }
        let sent = self
            .ssm
            .send_command()
            .document_name(DOCUMENT)
            .instance_ids(&self.instance_id)
            .parameters("commands", vec![self.script(phase).to_string()])
            .comment(&comment)
            .send()
            .await
            .map_err(|e| classify("ssm:SendCommand", e));
        match sent {
            Ok(output) => {
                let command_id =
                    output.command().and_then(|c| c.command_id()).map(str::to_string).ok_or_else(|| {
                        AwsError::retryable("ssm:SendCommand", "MissingCommandId", "SendCommand returned no command id")
                    })?;
                progress.record(phase.role(), command_id.clone());
                Ok(Script::Running { command_id, status: "Pending".into() })
            }
            Err(e) if e.is_retryable() => Err(e),
            Err(e) => {
                let why = format!(
                    "SSM refused the {} script on {} ({}: {})",
                    phase.name(),
                    self.instance_id,
                    e.code,
                    e.message
                );
                progress.record(&phase.ended_role("refused"), why.clone());
                Ok(Script::Refused(why))
            }
        }
    }

    /// The command an earlier delivery sent with `comment` to the instance, if any.
    async fn sent_before(&self, comment: &str) -> Result<Option<String>, AwsError> {
        let mut pages = self.ssm.list_commands().instance_id(&self.instance_id).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("ssm:ListCommands", e))?;
            let found = page.commands().iter().find(|c| c.comment() == Some(comment)).and_then(|c| c.command_id());
            if let Some(command_id) = found {
                return Ok(Some(command_id.to_string()));
            }
        }
        Ok(None)
    }

    async fn invocation(&self, phase: Phase, command_id: &str) -> Result<Script, AwsError> {
        let running = |status: &str| Script::Running { command_id: command_id.to_string(), status: status.to_string() };
        let checked = self
            .ssm
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(&self.instance_id)
            .send()
            .await
            .map_err(|e| classify("ssm:GetCommandInvocation", e));
        let output = match checked {
            Ok(output) => output,
            // Right after SendCommand the invocation may not be visible yet.
            Err(e) if e.code == "InvocationDoesNotExist" => return Ok(running("Pending")),
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => {
                return Ok(Script::Failed(format!(
                    "the {} script (command {command_id}) on {} cannot be checked ({}: {})",
                    phase.name(),
                    self.instance_id,
                    e.code,
                    e.message
                )))
            }
        };
        let status = output.status().map(|s| s.as_str()).unwrap_or("Pending");
        Ok(match output.status() {
            Some(CommandInvocationStatus::Success) => Script::Succeeded,
            None
            | Some(CommandInvocationStatus::Pending)
            | Some(CommandInvocationStatus::InProgress)
            | Some(CommandInvocationStatus::Delayed) => running(status),
            Some(_) => {
                let stderr = excerpt(output.standard_error_content().unwrap_or_default());
                let mut why = format!(
                    "the {} script failed on {} (command {command_id}: {status}, exit code {})",
                    phase.name(),
                    self.instance_id,
                    output.response_code()
                );
                if !stderr.is_empty() {
                    why.push_str(&format!(": {stderr}"));
                }
                Script::Failed(why)
            }
        })
    }
}

/// The options of a backup whose plan asks for scripts (a pre script, at least).
fn options(job: &BackupTask) -> Option<&BackupOptions> {
    job.run.as_ref()?.options.as_ref().filter(|options| !options.pre_script.is_empty())
}

/// The command's comment (SSM keeps 100 characters): it names the task, so that a later
/// delivery finds a command it does not have recorded.
pub fn comment(task: &RestoreTask, phase: Phase) -> String {
    let comment = format!("Lifeboat backup {} {} script", task.task_id, phase.name());
    comment.chars().take(100).collect()
}

/// The start of a script's standard error, on one line.
fn excerpt(stderr: &str) -> String {
    let line = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(STDERR_EXCERPT) {
        Some((end, _)) => format!("{}...", &line[..end]),
        None => line,
    }
}
