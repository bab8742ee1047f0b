//! Chaos: restores of 20 volumes (half of them cross-region) by the real `lifeboat` processes
//! while services are killed with SIGKILL at random moments and started again, while
//! nats-server is restarted, and with two replicas of every service, over both transports.
//! Afterwards every task has a verdict, each has exactly one volume in moto, and the counts are
//! exact. Each run prints its seed; `LIFEBOAT_CHAOS_SEED=<seed>` replays its schedule.

use std::time::Duration;

use lifeboat_proto as pb;
use lifeboat_tests::chaos::{exactness_problems, settled_summary, Fleet, Inventory, Pid, Rng};
use lifeboat_tests::*;

/// Volumes per source region: the restore has twice as many tasks.
const PER_REGION: usize = 10;
const TASKS: usize = 2 * PER_REGION;
/// A killed worker's messages come back after the bus's 30 s ack deadline, so a run that ends
/// with a kill needs that much more than a quiet one.
const SETTLE_WITHIN: Duration = Duration::from_secs(100);
const DRAIN_WITHIN: Duration = Duration::from_secs(45);

/// Ten snapshotted volumes in us-east-1 (restored in place) and ten in us-west-2 (copied to
/// us-east-1 first).
async fn seed(servers: &Servers) {
    for (region, zone) in [("us-east-1", "us-east-1a"), ("us-west-2", "us-west-2a")] {
        let ec2 = servers.ec2(region);
        for i in 0..PER_REGION {
            let volume = create_volume(&ec2, zone, 1, &[("chaos", region), ("n", &i.to_string())]).await;
            create_snapshot(&ec2, &volume, &[("chaos", region)]).await;
        }
    }
}

fn chaos_request(request_id: &str) -> pb::RestoreRequest {
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
/// serving the API where the test's client looks for it).
struct Stack {
    fleet: Fleet,
    discovery: Vec<Pid>,
    ebs: Vec<Pid>,
    aggregators: Vec<Pid>,
}

async fn start_stack(servers: &Servers, replicas: usize) -> Stack {
    let binary = tokio::task::spawn_blocking(crate::traces::lifeboat_binary).await.expect("build the lifeboat binary");
    let mut fleet = Fleet::new(binary, servers);
    let aggregators = (0..replicas)
        .map(|i| {
            let port = if i == 0 { servers.api_port } else { free_port() };
            fleet.spawn(&format!("aggregator-{i}"), "aggregator", Some(port), &[])
        })
        .collect();
    let discovery = (0..replicas).map(|i| fleet.spawn(&format!("discovery-{i}"), "discovery", None, &[])).collect();
    let ebs =
        (0..replicas).map(|i| fleet.spawn(&format!("ebs-{i}"), "ebs", None, &["--check-interval", "0.3"])).collect();
    wait_ready(&servers.api_url(), &mut fleet).await;
    Stack { fleet, discovery, ebs, aggregators }
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

/// Waits for the verdict, lets every redelivery of the ebs queue settle, then checks the
/// inventory and the counts, naming the seed in any failure.
async fn assert_exact(servers: &Servers, stack: &mut Stack, rng: &Rng, request_id: &str) {
    let Some(summary) = settled_summary(servers, request_id, SETTLE_WITHIN).await else {
        let last = servers.client().await.status(request_id, true).await;
        panic!(
            "seed {}: {request_id} has no final summary within {SETTLE_WITHIN:?}; last status {last:?}\n{}",
            rng.seed(),
            stack.fleet.logs_tail(25)
        );
    };
    // Late redeliveries (a killed worker's messages) must find their volume, not make another.
    work_drained_within(servers, "ebs", DRAIN_WITHIN).await;
    stack.fleet.assert_running();
    let inventory = Inventory::take(&servers.ec2("us-east-1"), request_id).await;
    let problems = exactness_problems(&summary, &inventory, TASKS);
    assert!(
        problems.is_empty(),
        "seed {} (process lives {:?}):\n  {}\n{}",
        rng.seed(),
        stack.fleet.lives(),
        problems.join("\n  "),
        stack.fleet.logs_tail(25)
    );
    eprintln!("seed {}: {TASKS} tasks succeeded, one volume each; process lives {:?}", rng.seed(), stack.fleet.lives());
}

/// Kills `victims` in a random order, each at a random moment 0.2-1.5 s after the previous
/// kill, down for 0.1-1 s before it starts again.
async fn kill_at_random(stack: &mut Stack, rng: &mut Rng, mut victims: Vec<Pid>) {
    while !victims.is_empty() {
        let victim = victims.swap_remove(rng.below(victims.len()));
        tokio::time::sleep(rng.between(Duration::from_millis(200), Duration::from_millis(1500))).await;
        let down = rng.between(Duration::from_millis(100), Duration::from_millis(1000));
        eprintln!("chaos: SIGKILL {} (down {down:?})", stack.fleet.name(victim));
        stack.fleet.kill_and_restart(victim, down).await;
        stack.fleet.assert_running();
    }
}

/// Discovery killed three times and ebs four times, at random moments of a 20-task restore.
async fn ebs_and_discovery_killed_during_a_restore(transport: Transport) {
    init_logging();
    let mut rng = Rng::from_env(&format!("kills-{transport:?}"));
    let servers = Servers::start_with(transport).await;
    seed(&servers).await;
    let mut stack = start_stack(&servers, 1).await;
    let (discovery, ebs) = (stack.discovery[0], stack.ebs[0]);
    servers.client().await.submit(&chaos_request("chaos-kills")).await.expect("submit");
    kill_at_random(&mut stack, &mut rng, vec![discovery, discovery, discovery, ebs, ebs, ebs, ebs]).await;
    assert_exact(&servers, &mut stack, &rng, "chaos-kills").await;
}

/// nats-server killed and started again (same port, same file store) twice mid-restore.
#[tokio::test]
async fn nats_server_restarted_during_a_restore() {
    init_logging();
    let mut rng = Rng::from_env("nats-restart");
    let mut servers = Servers::start().await;
    seed(&servers).await;
    let mut stack = start_stack(&servers, 1).await;
    servers.client().await.submit(&chaos_request("chaos-nats")).await.expect("submit");
    let client = servers.client().await;
    for _ in 0..2 {
        tokio::time::sleep(rng.between(Duration::from_millis(200), Duration::from_millis(1200))).await;
        let down = rng.between(Duration::from_millis(200), Duration::from_millis(1500));
        let counts = client.status("chaos-nats", false).await.ok().and_then(|r| r.summary).and_then(|s| s.counts);
        eprintln!("chaos: SIGKILL nats-server (down {down:?}) at {counts:?}");
        servers.restart_nats(down).await;
        stack.fleet.assert_running();
    }
    assert_exact(&servers, &mut stack, &rng, "chaos-nats").await;
}

/// Two replicas of discovery, ebs and the aggregator sharing the work, and one replica of
/// each killed at a random moment while its twin carries on.
async fn two_replicas_of_every_service(transport: Transport) {
    init_logging();
    let mut rng = Rng::from_env(&format!("replicas-{transport:?}"));
    let servers = Servers::start_with(transport).await;
    seed(&servers).await;
    let mut stack = start_stack(&servers, 2).await;
    servers.client().await.submit(&chaos_request("chaos-replicas")).await.expect("submit");
    // Not the first aggregator: the test's client reads the API that one serves.
    let victims =
        vec![stack.discovery[rng.below(2)], stack.ebs[rng.below(2)], stack.ebs[rng.below(2)], stack.aggregators[1]];
    kill_at_random(&mut stack, &mut rng, victims).await;
    assert_exact(&servers, &mut stack, &rng, "chaos-replicas").await;
}

on_both_transports!(ebs_and_discovery_killed_during_a_restore, two_replicas_of_every_service);
