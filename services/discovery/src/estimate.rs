//! A first estimate of how long a planned restore takes, from AWS's documented API rates and
//! concurrency caps, so a dry run and the watch can say "about 20 minutes", not nothing. Types
//! restore side by side, so the estimate is the slowest type's; within a type, work is limited
//! by the API's sustained rate beyond its burst and by the caps on operations in flight.

use lifeboat_proto::{restore_task, ResourceType, RestoreTask};

/// What a type's restores cost: an API bucket (burst, refill per second), the operations that
/// may be in flight at once (0: no cap), and a typical duration of one operation.
struct Profile {
    burst: f64,
    per_second: f64,
    in_flight: usize,
    fixed_seconds: f64,
    seconds_per_gib: f64,
}

fn profile(kind: ResourceType, copies: bool) -> Profile {
    match kind {
        // CreateVolume 100 burst, 5/s; a cross-region snapshot copy: 20 in flight per region.
        ResourceType::EbsVolume if copies => {
            Profile { burst: 100.0, per_second: 5.0, in_flight: 20, fixed_seconds: 120.0, seconds_per_gib: 4.0 }
        }
        ResourceType::EbsVolume => {
            Profile { burst: 100.0, per_second: 5.0, in_flight: 0, fixed_seconds: 30.0, seconds_per_gib: 0.0 }
        }
        // RunInstances 5 burst, 2/s; CopyImage 100 burst, 1/s.
        ResourceType::Ec2Instance if copies => {
            Profile { burst: 5.0, per_second: 1.0, in_flight: 0, fixed_seconds: 600.0, seconds_per_gib: 4.0 }
        }
        ResourceType::Ec2Instance => {
            Profile { burst: 5.0, per_second: 2.0, in_flight: 0, fixed_seconds: 90.0, seconds_per_gib: 0.0 }
        }
        // 20 snapshot copies in flight; an instance restore takes minutes and grows with size.
        ResourceType::RdsInstance | ResourceType::RdsCluster => Profile {
            burst: 20.0,
            per_second: 1.0,
            in_flight: if copies { 20 } else { 0 },
            fixed_seconds: 600.0,
            seconds_per_gib: 2.0,
        },
        // 50 table restores in flight per account and region.
        ResourceType::DynamodbTable => {
            Profile { burst: 10.0, per_second: 10.0, in_flight: 50, fixed_seconds: 300.0, seconds_per_gib: 6.0 }
        }
        _ => Profile { burst: 1.0, per_second: 1.0, in_flight: 0, fixed_seconds: 60.0, seconds_per_gib: 0.0 },
    }
}

fn crosses(task: &RestoreTask) -> bool {
    let backup = task.backup.clone().unwrap_or_default();
    let region = match &task.target {
        Some(restore_task::Target::Ebs(t)) => &t.region,
        Some(restore_task::Target::Ec2(t)) => &t.region,
        Some(restore_task::Target::Rds(t)) => &t.region,
        _ => return false,
    };
    !region.is_empty() && *region != backup.region
}

/// Seconds until every task is done, by the model above.
pub fn estimated_seconds(tasks: &[RestoreTask]) -> u32 {
    let mut groups: std::collections::BTreeMap<(i32, bool), Vec<i64>> = Default::default();
    for task in tasks {
        let size = task.backup.as_ref().map_or(0, |b| b.size_gib);
        groups.entry((task.resource_type, crosses(task))).or_default().push(size);
    }
    let mut slowest = 0.0f64;
    for ((kind, copies), sizes) in groups {
        let p = profile(ResourceType::try_from(kind).unwrap_or_default(), copies);
        let n = sizes.len() as f64;
        // The last call starts once the burst is spent and the rest came in at the refill rate.
        let calls = ((n - p.burst).max(0.0)) / p.per_second;
        let largest = sizes.iter().copied().max().unwrap_or(0) as f64;
        let one = p.fixed_seconds + largest * p.seconds_per_gib;
        let waves = if p.in_flight == 0 { 1.0 } else { (n / p.in_flight as f64).ceil() };
        slowest = slowest.max(calls + waves * one);
    }
    slowest.round().min(u32::MAX as f64) as u32
}

/// "about 1 h 20 min", "about 4 min", "under a minute".
pub fn human(seconds: u32) -> String {
    match seconds {
        0..=59 => "under a minute".to_string(),
        60..=3599 => format!("about {} min", seconds.div_ceil(60)),
        _ => format!("about {} h {} min", seconds / 3600, (seconds % 3600) / 60),
    }
}
