//! chaos: the suite's chaos runs at a larger N. Restores of N volumes (half copied across
//! regions) by real `lifeboat serve` processes, over NATS and over SQS: once with one replica
//! of each service while discovery and ebs are SIGKILLed again and again, once with two replicas
//! of every service while one of each is killed. Prints the time to the verdict and whether
//! every task has exactly one volume and the counts are exact.

use std::time::{Duration, Instant};

use lifeboat_tests::chaos::Rng;
use lifeboat_tests::chaos_run::{chaos_request, seed, settle, Stack};
use lifeboat_tests::*;

pub async fn chaos(tasks: usize) {
    let per_region = tasks.div_ceil(2).max(1);
    let tasks = 2 * per_region;
    println!("== chaos: {tasks} volumes ({per_region} copied across regions), services SIGKILLed mid-restore");
    println!("  {:<6} {:<34} {:>6} {:>12}  result", "bus", "run", "kills", "verdict in");
    // `LIFEBOAT_CHAOS_ONLY=nats/2` runs one of the four (bus, replicas).
    let only = std::env::var("LIFEBOAT_CHAOS_ONLY").unwrap_or_default().to_lowercase();
    for transport in [Transport::Nats, Transport::Sqs] {
        for replicas in [1, 2] {
            let name = format!("{transport:?}/{replicas}").to_lowercase();
            if only.is_empty() || only == name {
                run(transport, replicas, per_region).await;
            }
        }
    }
}

async fn run(transport: Transport, replicas: usize, per_region: usize) {
    let tasks = 2 * per_region;
    let mut rng = Rng::from_env(&format!("bench-{transport:?}-{replicas}"));
    let servers = Servers::start_with(transport).await;
    seed(&servers, per_region).await;
    let mut stack = Stack::start(crate::lifeboat_binary(), &servers, replicas).await;
    // One replica: discovery three times, ebs once per 20 tasks (at least four, at most twelve).
    // Two: one of each service's replicas, and ebs twice more, while the twins carry on.
    let (victims, run) = if replicas == 1 {
        let ebs = (tasks / 20).clamp(4, 12);
        let mut victims = vec![stack.discovery[0]; 3];
        victims.extend(std::iter::repeat_n(stack.ebs[0], ebs));
        (victims, "1 replica each, discovery+ebs killed".to_string())
    } else {
        let victims = vec![
            stack.discovery[rng.below(2)],
            stack.ebs[rng.below(2)],
            stack.ebs[rng.below(2)],
            stack.ebs[rng.below(2)],
            stack.aggregators[1],
        ];
        (victims, "2 replicas each, one of each killed".to_string())
    };
    let kills = victims.len();
    let request_id = format!("bench-chaos-{replicas}");
    let submitted = Instant::now();
    servers.client().await.submit(&chaos_request(&request_id)).await.expect("submit");
    stack.kill_at_random(&mut rng, victims).await;
    let settle_within = Duration::from_secs(120 + tasks as u64);
    let outcome = settle(&servers, &mut stack, &rng, &request_id, tasks, submitted, settle_within).await;
    let result = if outcome.problems.is_empty() {
        format!("exact: {tasks} succeeded, one volume each")
    } else {
        format!("{} problems (seed {}): {}", outcome.problems.len(), rng.seed(), outcome.problems.join("; "))
    };
    println!(
        "  {:<6} {:<34} {:>6} {:>11.1}s  {result}",
        format!("{transport:?}"),
        run,
        kills,
        outcome.verdict_after.as_secs_f64()
    );
}
