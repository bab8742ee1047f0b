//! One chaos run, shared by the chaos tests (small N, in CI) and `lifeboat-bench chaos` (large
//! N): `per_region` snapshotted volumes in us-east-1 (restored in place) and as many in
//! us-west-2 (copied to us-east-1 first), restored by real `lifeboat serve` processes while some
//! of them are killed with SIGKILL at random moments and started again. Afterwards every task
//! has a verdict, each has exactly one volume in moto, and the counts are exact.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use lifeboat_proto as pb;

use crate::chaos::{exactness_problems, settled_summary, Fleet, Inventory, Pid, Rng};
use crate::*;

/// Seeds `per_region` volumes with a snapshot in each of us-east-1 and us-west-2.
pub async fn seed(servers: &Servers, per_region: usize) {
    for (region, zone) in [("us-east-1", "us-east-1a"), ("us-west-2", "us-west-2a")] {
        let ec2 = servers.ec2(region);
        futures::future::join_all((0..per_region).map(|i| {
            let ec2 = ec2.clone();
            async move {
                let volume = create_volume(&ec2, zone, 1, &[("chaos", region), ("n", &i.to_string())]).await;
                create_snapshot(&ec2, &volume, &[("chaos", region)]).await;
            }
        }))
        .await;
    }
}

/// Both regions' volumes restored into us-east-1: one set in place, one across regions.
pub fn chaos_request(request_id: &str) -> pb::RestoreRequest {
    let in_place = pb::EbsTarget { availability_zone: "us-east-1b".into(), ..Default::default() };
    let across =
        pb::EbsTarget { region: "us-east-1".into(), availability_zone: "us-east-1c".into(), ..Default::default() };
    request(
        request_id,
        vec![
            ebs_set("east", "us-east-1", &[("chaos", "us-east-1")], None, in_place),
            ebs_set("west", "us-west-2", &[("chaos", "us-west-2")], None, across),
        ],
    )
}

/// The processes of one run: `replicas` of discovery, ebs and the aggregator (the first one
/// serving the API where the client looks for it).
pub struct Stack {
    pub fleet: Fleet,
    pub discovery: Vec<Pid>,
    pub ebs: Vec<Pid>,
    pub aggregators: Vec<Pid>,
}

impl Stack {
    pub async fn start(binary: PathBuf, servers: &Servers, replicas: usize) -> Self {
        let mut fleet = Fleet::new(binary, servers);
        let aggregators = (0..replicas)
            .map(|i| {
                let port = if i == 0 { servers.api_port } else { free_port() };
                fleet.spawn(&format!("aggregator-{i}"), "aggregator", Some(port), &[])
            })
            .collect();
        let discovery = (0..replicas).map(|i| fleet.spawn(&format!("discovery-{i}"), "discovery", None, &[])).collect();
        let ebs = (0..replicas)
            .map(|i| fleet.spawn(&format!("ebs-{i}"), "ebs", None, &["--check-interval", "0.3"]))
            .collect();
        wait_ready(&servers.api_url(), &mut fleet).await;
        Self { fleet, discovery, ebs, aggregators }
    }

    /// Kills `victims` in a random order, each at a random moment 0.2-1.5 s after the previous
    /// kill, down for 0.1-1 s before it starts again.
    pub async fn kill_at_random(&mut self, rng: &mut Rng, mut victims: Vec<Pid>) {
        while !victims.is_empty() {
            let victim = victims.swap_remove(rng.below(victims.len()));
            tokio::time::sleep(rng.between(Duration::from_millis(200), Duration::from_millis(1500))).await;
            let down = rng.between(Duration::from_millis(100), Duration::from_millis(1000));
            eprintln!("chaos: SIGKILL {} (down {down:?})", self.fleet.name(victim));
            self.fleet.kill_and_restart(victim, down).await;
            self.fleet.assert_running();
        }
    }
}

/// Until the first aggregator answers its readiness probe (it has its bus and store).
async fn wait_ready(api_url: &str, fleet: &mut Fleet) {
    let probe = format!("{api_url}/readyz");
    for _ in 0..300 {
        if reqwest::get(&probe).await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        fleet.assert_running();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the aggregator was not ready within 30s:\n{}", fleet.logs_tail(30));
}

/// What a run ended with.
#[derive(Debug)]
pub struct Outcome {
    /// From submit to the final summary.
    pub verdict_after: Duration,
    /// What does not hold (see [`exactness_problems`]); empty when the run was exact.
    pub problems: Vec<String>,
}

/// Waits up to `settle_within` for the verdict, lets every redelivery of the ebs queue settle
/// (a killed worker's messages must find their volume, not make another), then checks the
/// inventory and the counts against `tasks`. Panics, naming the seed, when no verdict comes.
pub async fn settle(
    servers: &Servers,
    stack: &mut Stack,
    rng: &Rng,
    request_id: &str,
    tasks: usize,
    submitted: Instant,
    settle_within: Duration,
) -> Outcome {
    let Some(summary) = settled_summary(servers, request_id, settle_within).await else {
        let last = servers.client().await.status(request_id, true).await;
        panic!(
            "seed {}: {request_id} has no final summary within {settle_within:?}; last status {last:?}\n{}",
            rng.seed(),
            stack.fleet.logs_tail(25)
        );
    };
    let verdict_after = submitted.elapsed();
    work_drained_within(servers, "ebs", Duration::from_secs(45)).await;
    stack.fleet.assert_running();
    let inventory = Inventory::take(&servers.ec2("us-east-1"), request_id).await;
    Outcome { verdict_after, problems: exactness_problems(&summary, &inventory, tasks) }
}
