//! Chaos: restores of 20 volumes (half of them cross-region) by the real `lifeboat` processes
//! while services are killed with SIGKILL at random moments and started again, while
//! nats-server is restarted, and with two replicas of every service, over both transports.
//! Afterwards every task has a verdict, each has exactly one volume in moto, and the counts are
//! exact. Each run prints its seed; `LIFEBOAT_CHAOS_SEED=<seed>` replays its schedule.

use std::time::{Duration, Instant};

use lifeboat_tests::chaos::Rng;
use lifeboat_tests::chaos_run::{chaos_request, seed, Stack};
use lifeboat_tests::*;

/// Volumes per source region: the restore has twice as many tasks.
const PER_REGION: usize = 10;
const TASKS: usize = 2 * PER_REGION;
/// A killed worker's messages come back after the bus's 30 s ack deadline, so a run that ends
/// with a kill needs that much more than a quiet one.
const SETTLE_WITHIN: Duration = Duration::from_secs(100);

async fn start_stack(servers: &Servers, replicas: usize) -> Stack {
    let binary = tokio::task::spawn_blocking(crate::traces::lifeboat_binary).await.expect("build the lifeboat binary");
    Stack::start(binary, servers, replicas).await
}

/// Checks the verdict, the inventory and the counts, naming the seed in any failure.
async fn assert_exact(servers: &Servers, stack: &mut Stack, rng: &Rng, request_id: &str, submitted: Instant) {
    let outcome =
        lifeboat_tests::chaos_run::settle(servers, stack, rng, request_id, TASKS, submitted, SETTLE_WITHIN).await;
    assert!(
        outcome.problems.is_empty(),
        "seed {} (process lives {:?}):\n  {}\n{}",
        rng.seed(),
        stack.fleet.lives(),
        outcome.problems.join("\n  "),
        stack.fleet.logs_tail(25)
    );
    eprintln!("seed {}: {TASKS} tasks succeeded, one volume each; process lives {:?}", rng.seed(), stack.fleet.lives());
}

/// Discovery killed three times and ebs four times, at random moments of a 20-task restore.
async fn ebs_and_discovery_killed_during_a_restore(transport: Transport) {
    init_logging();
    let mut rng = Rng::from_env(&format!("kills-{transport:?}"));
    let servers = Servers::start_with(transport).await;
    seed(&servers, PER_REGION).await;
    let mut stack = start_stack(&servers, 1).await;
    let (discovery, ebs) = (stack.discovery[0], stack.ebs[0]);
    let submitted = Instant::now();
    servers.client().await.submit(&chaos_request("chaos-kills")).await.expect("submit");
    stack.kill_at_random(&mut rng, vec![discovery, discovery, discovery, ebs, ebs, ebs, ebs]).await;
    assert_exact(&servers, &mut stack, &rng, "chaos-kills", submitted).await;
}

/// nats-server killed and started again (same port, same file store) twice mid-restore.
#[tokio::test]
async fn nats_server_restarted_during_a_restore() {
    init_logging();
    let mut rng = Rng::from_env("nats-restart");
    let mut servers = Servers::start().await;
    seed(&servers, PER_REGION).await;
    let mut stack = start_stack(&servers, 1).await;
    let submitted = Instant::now();
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
    assert_exact(&servers, &mut stack, &rng, "chaos-nats", submitted).await;
}

/// Two replicas of discovery, ebs and the aggregator sharing the work, and one replica of
/// each killed at a random moment while its twin carries on.
async fn two_replicas_of_every_service(transport: Transport) {
    init_logging();
    let mut rng = Rng::from_env(&format!("replicas-{transport:?}"));
    let servers = Servers::start_with(transport).await;
    seed(&servers, PER_REGION).await;
    let mut stack = start_stack(&servers, 2).await;
    let submitted = Instant::now();
    servers.client().await.submit(&chaos_request("chaos-replicas")).await.expect("submit");
    // Not the first aggregator: the test's client reads the API that one serves.
    let victims =
        vec![stack.discovery[rng.below(2)], stack.ebs[rng.below(2)], stack.ebs[rng.below(2)], stack.aggregators[1]];
    stack.kill_at_random(&mut rng, victims).await;
    assert_exact(&servers, &mut stack, &rng, "chaos-replicas", submitted).await;
}

on_both_transports!(ebs_and_discovery_killed_during_a_restore, two_replicas_of_every_service);
