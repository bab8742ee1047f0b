//! Chaos support: Lifeboat services as OS processes of the real `lifeboat` binary, killed with
//! SIGKILL and started again; nats-server stopped and restarted on its port and file store; a
//! seeded schedule so a failing run can be replayed; and what must hold after any such run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use lifeboat_common::subjects::{TAG_REQUEST_ID, TAG_RESTORE_COPY, TAG_TASK_ID};
use lifeboat_proto as pb;
use tokio::process::{Child, Command};

use super::{server_binary, snapshots_tagged, tags_of, volumes_tagged, Servers, Transport, STATE_TABLE};

/// The variable that replays a run: the seed a failed run printed.
pub const SEED_VARIABLE: &str = "LIFEBOAT_CHAOS_SEED";

/// A small seeded generator (splitmix64): the schedule of kills depends on nothing else.
pub struct Rng {
    seed: u64,
    state: u64,
}

impl Rng {
    /// Seeded from `$LIFEBOAT_CHAOS_SEED`, else from the clock; the seed is printed either way.
    pub fn from_env(test: &str) -> Self {
        let seed = std::env::var(SEED_VARIABLE).ok().and_then(|s| s.trim().parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        });
        eprintln!("chaos {test}: seed {seed} (replay with {SEED_VARIABLE}={seed})");
        Self { seed, state: seed }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A duration in `min..max`, to the millisecond.
    pub fn between(&mut self, min: Duration, max: Duration) -> Duration {
        let span = max.saturating_sub(min).as_millis().max(1) as u64;
        min + Duration::from_millis(self.next() % span)
    }
}

impl Servers {
    /// Kills nats-server (SIGKILL, as a crashed node dies), leaves it down for `down`, then
    /// starts it again on the same port with the same JetStream file store.
    pub async fn restart_nats(&mut self, down: Duration) {
        let _ = self.nats.kill();
        let _ = self.nats.wait();
        tokio::time::sleep(down).await;
        let port = self.nats_url.rsplit(':').next().expect("a port in the NATS url").to_string();
        let mut nats = std::process::Command::new(server_binary("nats-server", "LIFEBOAT_NATS_SERVER"))
            .args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"])
            .arg(self._dir.path().join("jetstream"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server again");
        super::wait_for_port(port.parse().expect("a port number"), "nats-server (restarted)", &mut nats).await;
        self.nats = nats;
    }
}

/// One `lifeboat serve <service>` process, started again after each kill with the same
/// arguments; its output is appended to one log per process across its lives.
struct Process {
    name: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    lives: u32,
}

/// The service processes of one test, each killed when the fleet is dropped.
pub struct Fleet {
    binary: PathBuf,
    env: Vec<(String, String)>,
    processes: Vec<Process>,
    logs: tempfile::TempDir,
}

/// Resident memory of a [`Fleet`] process, in KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    /// Resident now (`VmRSS`).
    pub rss_kib: u64,
    /// The most it was resident at any moment of this life (`VmHWM`): a peak between samples too.
    pub peak_rss_kib: u64,
}

/// A process of a [`Fleet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pid(usize);

impl Fleet {
    /// Nothing running yet; `binary` is the `lifeboat` command, pointed at `servers`.
    pub fn new(binary: PathBuf, servers: &Servers) -> Self {
        let mut env: Vec<(String, String)> = [
            ("AWS_ENDPOINT_URL", servers.moto_url.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("NATS_URL", servers.nats_url.as_str()),
            ("RUST_LOG", "info"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if servers.transport == Transport::Sqs {
            let sqs = servers.sqs_config();
            env.extend([
                ("LIFEBOAT_TRANSPORT".to_string(), "sqs".to_string()),
                ("LIFEBOAT_SQS_WAIT_SECONDS".to_string(), sqs.wait_time.as_secs().to_string()),
                ("LIFEBOAT_SQS_MAX_RECEIVE_COUNT".to_string(), sqs.max_receive_count.to_string()),
                ("LIFEBOAT_STATE_TABLE".to_string(), STATE_TABLE.to_string()),
            ]);
        }
        // `LIFEBOAT_CHAOS_LOGS=<dir>` keeps every process's log there, for a run to be read after.
        let logs = match std::env::var_os("LIFEBOAT_CHAOS_LOGS") {
            Some(dir) => {
                std::fs::create_dir_all(&dir).expect("create LIFEBOAT_CHAOS_LOGS");
                let mut logs = tempfile::Builder::new().prefix("fleet-").tempdir_in(dir).expect("a log dir");
                logs.disable_cleanup(true);
                eprintln!("fleet logs in {}", logs.path().display());
                logs
            }
            None => tempfile::tempdir().expect("a log dir"),
        };
        Self { binary, env, processes: Vec::new(), logs }
    }

    /// Starts `lifeboat serve <service>`, serving HTTP (the aggregator's API) on `http_port` if
    /// given; `name` tells replicas apart in logs and reports.
    pub fn spawn(&mut self, name: &str, service: &str, http_port: Option<u16>, extra: &[&str]) -> Pid {
        let http_addr = http_port.map_or("none".to_string(), |port| format!("127.0.0.1:{port}"));
        let mut args = vec!["serve".to_string(), service.to_string(), "--http-addr".to_string(), http_addr];
        args.extend(extra.iter().map(|a| a.to_string()));
        let log = self.logs.path().join(format!("{name}.log"));
        self.processes.push(Process { name: name.to_string(), args, log, child: None, lives: 0 });
        let pid = Pid(self.processes.len() - 1);
        self.start(pid);
        pid
    }

    fn start(&mut self, pid: Pid) {
        let process = &mut self.processes[pid.0];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&process.log).expect("open the log");
        let mut command = Command::new(&self.binary);
        for variable in
            ["AWS_PROFILE", "AWS_SESSION_TOKEN", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        {
            command.env_remove(variable);
        }
        command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(&process.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log"))
            .stderr(log)
            .kill_on_drop(true);
        process.child = Some(command.spawn().expect("start the lifeboat binary"));
        process.lives += 1;
    }

    /// SIGKILL: no drain, no acks of what it was doing, connections dropped mid-call.
    pub async fn kill(&mut self, pid: Pid) {
        if let Some(mut child) = self.processes[pid.0].child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    pub async fn kill_and_restart(&mut self, pid: Pid, down: Duration) {
        self.kill(pid).await;
        tokio::time::sleep(down).await;
        self.start(pid);
    }

    pub fn name(&self, pid: Pid) -> &str {
        &self.processes[pid.0].name
    }

    /// The operating system's id of the process now, `None` while it is down.
    pub fn os_pid(&self, pid: Pid) -> Option<u32> {
        self.processes[pid.0].child.as_ref().and_then(Child::id)
    }

    /// The process's memory now, from `/proc/<pid>/status` (Linux); `None` while it is down.
    pub fn memory(&self, pid: Pid) -> Option<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.os_pid(pid)?)).ok()?;
        let kib = |field: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(field))?;
            line[field.len()..].split_whitespace().next()?.parse().ok()
        };
        Some(Memory { rss_kib: kib("VmRSS:")?, peak_rss_kib: kib("VmHWM:")? })
    }

    /// How many times each process was started, by name.
    pub fn lives(&self) -> BTreeMap<String, u32> {
        self.processes.iter().map(|p| (p.name.clone(), p.lives)).collect()
    }

    /// Panics, with the log's tail, if a process ended by itself: a service must outlive its
    /// peers' crashes and the bus's restarts.
    pub fn assert_running(&mut self) {
        for process in &mut self.processes {
            let Some(child) = process.child.as_mut() else { continue };
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{} exited by itself with {status}:\n{}", process.name, tail(&process.log, 40));
            }
        }
    }

    /// The last lines of every process's log, for a failure's message.
    pub fn logs_tail(&self, lines: usize) -> String {
        self.processes
            .iter()
            .map(|p| format!("---- {} ({} lives)\n{}", p.name, p.lives, tail(&p.log, lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls the status of `request_id` (with its tasks) until it is final, through any error a
/// restarting bus or aggregator gives in between; `None` if it is not final `within`.
pub async fn settled_summary(servers: &Servers, request_id: &str, within: Duration) -> Option<pb::RequestSummary> {
    let deadline = Instant::now() + within;
    let client = servers.client().await;
    while Instant::now() < deadline {
        if let Ok(reply) = client.status(request_id, true).await {
            if let Some(summary) = reply.summary.filter(|s| s.r#final) {
                return Some(summary);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// What a restore left in moto: the volumes and the snapshot copies tagged with the request,
/// by task id (`lifeboat:task-id` on volumes, `lifeboat:restore-copy` on copies).
#[derive(Debug, Default)]
pub struct Inventory {
    pub volumes: BTreeMap<String, Vec<String>>,
    pub copies: BTreeMap<String, Vec<String>>,
}

impl Inventory {
    pub async fn take(ec2: &aws_sdk_ec2::Client, request_id: &str) -> Self {
        let mut inventory = Self::default();
        for volume in volumes_tagged(ec2, TAG_REQUEST_ID, request_id).await {
            let task_id = tags_of(&volume).remove(TAG_TASK_ID).unwrap_or_default();
            inventory.volumes.entry(task_id).or_default().push(volume.volume_id().unwrap_or_default().to_string());
        }
        for snapshot in snapshots_tagged(ec2, TAG_REQUEST_ID, request_id).await {
            let copy_of = snapshot.tags().iter().find(|t| t.key() == Some(TAG_RESTORE_COPY)).and_then(|t| t.value());
            if let Some(task_id) = copy_of {
                let id = snapshot.snapshot_id().unwrap_or_default().to_string();
                inventory.copies.entry(task_id.to_string()).or_default().push(id);
            }
        }
        inventory
    }
}

fn phase(task: &pb::TaskState) -> pb::TaskPhase {
    pb::TaskPhase::try_from(task.phase).unwrap_or_default()
}

/// What must hold after any chaos: every one of the `expected` tasks has a verdict and
/// succeeded, the counts say exactly that, and each task has exactly one volume (and at most
/// one snapshot copy), the one its status names. Returns the problems found, empty if none.
pub fn exactness_problems(summary: &pb::RequestSummary, inventory: &Inventory, expected: usize) -> Vec<String> {
    let mut problems = Vec::new();
    let counts = summary.counts.clone().unwrap_or_default();
    let verdict = pb::Verdict::try_from(summary.verdict).unwrap_or_default();
    if verdict != pb::Verdict::Completed {
        problems.push(format!("verdict {verdict:?}, not Completed"));
    }
    if summary.total_tasks as usize != expected || summary.tasks.len() != expected {
        problems.push(format!(
            "{} planned, {} tasks reported, {expected} expected",
            summary.total_tasks,
            summary.tasks.len()
        ));
    }
    if counts.succeeded as usize != expected || counts.failed + counts.skipped + counts.cancelled != 0 {
        problems.push(format!("counts {counts:?}: succeeded must be {expected}, nothing else final"));
    }
    for task in &summary.tasks {
        let volumes = inventory.volumes.get(&task.task_id).cloned().unwrap_or_default();
        if phase(task) != pb::TaskPhase::Succeeded {
            problems.push(format!(
                "task {} ended {:?} ({}: {})",
                task.task_id,
                phase(task),
                task.reason_code,
                task.message
            ));
        }
        if volumes.len() != 1 {
            problems.push(format!("task {} has {} volumes: {volumes:?}", task.task_id, volumes.len()));
        } else if !task.created_resource_ids.contains(&volumes[0]) {
            problems.push(format!(
                "task {} reports {:?}, moto holds {}",
                task.task_id, task.created_resource_ids, volumes[0]
            ));
        }
        if let Some(copies) = inventory.copies.get(&task.task_id).filter(|c| c.len() > 1) {
            problems.push(format!("task {} has {} snapshot copies: {copies:?}", task.task_id, copies.len()));
        }
    }
    let reported: std::collections::BTreeSet<&String> = summary.tasks.iter().map(|t| &t.task_id).collect();
    for (task_id, volumes) in &inventory.volumes {
        if !reported.contains(task_id) {
            problems.push(format!("volumes {volumes:?} of task {task_id:?}, which the summary does not name"));
        }
    }
    problems
}
