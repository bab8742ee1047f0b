//! Restore drills over real nats-server and moto: a rule's backup run makes recovery points of
//! tagged volumes and a table; the drill restores the newest point of each into the drill's
//! subnet, checks the sizes and the item count, times each restore, deletes what it made, and
//! stores its report (read back by `lifeboat drill report`). A drill stopped between its
//! restore and its teardown leaves resources that `sweep_leftovers` then removes; then
//! `lifeboat drill run` does a whole drill from the command line.

use std::sync::Arc;

use lifeboat_cli::drill::StoreFollow;
use lifeboat_common::aws::{Accounts, DEFAULT_ROLE_NAME};
use lifeboat_proto as pb;
use lifeboat_scheduler::drill::{stored_report, sweep_leftovers, DrillConfig, DrillReport, Drills};
use lifeboat_tests::*;

const ACCOUNT: &str = "123456789012";

fn plan_text(subnet: &str) -> String {
    format!(
        r#"
name: shop
rules:
  - name: nightly
    schedule: "0 2 * * *"
    selection:
      resource_types: [ebs, dynamodb]
      regions: [us-east-1]
      tags: {{include: {{app: shop}}}}
    retention: {{days: 7}}
    drill: {{resources: 3, target: {{account: "{ACCOUNT}", region: us-east-1, subnet: {subnet}}}}}
"#
    )
}

/// A subnet in us-east-1b, the drill's isolated target.
async fn subnet(ec2: &aws_sdk_ec2::Client) -> String {
    let vpc = ec2.create_vpc().cidr_block("10.9.0.0/16").send().await.expect("create a VPC");
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).expect("a VPC id").to_string();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block("10.9.1.0/24")
        .availability_zone("us-east-1b")
        .send()
        .await
        .expect("create a subnet");
    subnet.subnet().and_then(|s| s.subnet_id()).expect("a subnet id").to_string()
}

/// A tagged table of three items.
async fn orders_table(ddb: &aws_sdk_dynamodb::Client) {
    use aws_sdk_dynamodb::types::AttributeValue;
    fixtures::create_table(ddb, "orders", &[("app", "shop")]).await;
    for id in ["a", "b", "c"] {
        ddb.put_item().table_name("orders").item("id", AttributeValue::S(id.into())).send().await.expect("an item");
    }
}

/// Two tagged volumes and a tagged table backed up by the rule, a volume the rule does not
/// select, and a newer snapshot outside the plan that the drill must not pick. Returns the
/// plan file's directory, the plan, and the resources (8 and 4 GiB volumes, the table).
async fn backed_up(
    servers: &Servers,
    client: &lifeboat_cli::client::Client,
) -> (tempfile::TempDir, lifeboat_plans::Plan, Vec<String>) {
    let east = servers.ec2("us-east-1");
    let large = create_volume(&east, "us-east-1a", 8, &[("app", "shop")]).await;
    let small = create_volume(&east, "us-east-1a", 4, &[("app", "shop")]).await;
    create_volume(&east, "us-east-1a", 2, &[("app", "other")]).await;
    orders_table(&aws_sdk_dynamodb::Client::new(&servers.aws("us-east-1"))).await;
    let subnet = subnet(&east).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("shop.yaml");
    std::fs::write(&file, plan_text(&subnet)).expect("write the plan");
    let file = file.to_str().expect("a UTF-8 path").to_string();
    for request in lifeboat_cli::backup::run_requests(&file, Some("nightly")).expect("the run") {
        client.submit(&request).await.expect("submit the run");
        let summary = final_summary(client, &request.request_id).await;
        assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:?}");
    }
    tick().await;
    create_snapshot(&east, &large, &[("note", "taken by hand")]).await;
    let plan = lifeboat_cli::backup::load_plan(&file).expect("the plan");
    (dir, plan, vec![large, small, "orders".to_string()])
}

fn drills(servers: &Servers, bus: Arc<dyn lifeboat_common::Bus>, follow: StoreFollow) -> Drills<StoreFollow> {
    let accounts = Accounts::new(servers.aws("us-east-1"), DEFAULT_ROLE_NAME);
    Drills::new(bus, accounts, follow, DrillConfig::default())
}

fn lifeboat(servers: &Servers, args: &[&str]) -> std::process::Output {
    crate::traces::lifeboat_command(servers).args(args).output().expect("run lifeboat")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drill_restores_validates_times_and_tears_down() {
    init_logging();
    let servers = Servers::start().await;
    let _running = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let (_dir, plan, volumes) = backed_up(&servers, &client).await;
    let east = servers.ec2("us-east-1");

    let follow = StoreFollow { client: servers.client().await, store: servers.store().await };
    let bus = servers.shared_bus().await;
    let report = drills(&servers, bus.clone(), follow).run(&plan, "nightly").await.expect("the drill");

    assert!(report.drill_id.starts_with("drill-shop-nightly-"), "{}", report.drill_id);
    assert_eq!(report.verdict, "COMPLETED", "{report:#?}");
    assert!(report.passed(), "{report:#?}");
    let mut drilled: Vec<&str> = report.resources.iter().map(|r| r.source_resource_id.as_str()).collect();
    drilled.sort();
    let mut expected: Vec<&str> = volumes.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(drilled, expected, "the rule's volumes and table, not the volume it does not select");
    let ddb = aws_sdk_dynamodb::Client::new(&servers.aws("us-east-1"));
    for resource in report.resources.iter().filter(|r| r.resource_type == "dynamodb") {
        assert_eq!(resource.restored_ids.len(), 1, "{resource:?}");
        assert!(resource.restored_ids[0].ends_with(":table/orders-drill"), "{resource:?}");
        assert_eq!(resource.validation, "valid", "ACTIVE with the backup's three items");
        assert!(resource.restore_seconds.is_some() && resource.torn_down, "{resource:?}");
    }
    let tables = ddb.list_tables().send().await.expect("list tables");
    assert_eq!(tables.table_names(), ["orders"], "the restored table is deleted");
    for resource in report.resources.iter().filter(|r| r.resource_type == "ebs") {
        let point =
            east.describe_snapshots().snapshot_ids(&resource.backup_id).send().await.expect("describe the point");
        let point = &point.snapshots()[0];
        let tags: std::collections::HashMap<_, _> =
            point.tags().iter().map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())).collect();
        assert_eq!(tags.get("lifeboat:plan"), Some(&"shop"), "the plan's point, not the newer manual snapshot");
        assert_eq!(resource.restored_ids.len(), 1, "{resource:?}");
        assert!(resource.restored_ids[0].starts_with("vol-"), "{resource:?}");
        let seconds = resource.restore_seconds.expect("a measured time to restore");
        assert!(seconds > 0.0 && seconds < 60.0, "{seconds}");
        assert_eq!(resource.validation, "valid");
        assert!(resource.torn_down, "{resource:?}");
    }
    // Nothing the drill restored is left.
    assert!(volumes_tagged(&east, "lifeboat:request-id", &report.drill_id).await.is_empty());
    // The report is stored, and the restore times are exported.
    let stored = stored_report(bus.shared().as_ref(), &report.drill_id).await.expect("read").expect("stored");
    assert_eq!(stored, report);
    let metrics = lifeboat_common::metrics::install().render();
    // (The registry is the process's: another test's drill of a table also named `orders`
    // counts there too.)
    for resource in &report.resources {
        let (kind, id) = (&resource.resource_type, &resource.source_resource_id);
        let series = format!("lifeboat_drill_restore_seconds_count{{type=\"{kind}\",resource=\"{id}\"}} ");
        assert!(metrics.lines().any(|l| l.starts_with(&series)), "{series} in:\n{metrics}");
    }
    let output = lifeboat(&servers, &["drill", "report", &report.drill_id]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(printed.contains(", passed"), "{printed}");
    for id in &volumes {
        let line = printed.lines().find(|l| l.contains(&format!(" {id} from "))).expect("a line per resource");
        assert!(line.contains("restored in") && line.ends_with("validated, torn down"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drill_stopped_before_its_teardown_is_swept() {
    init_logging();
    let servers = Servers::start().await;
    let _running = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let (dir, plan, volumes) = backed_up(&servers, &client).await;
    let east = servers.ec2("us-east-1");

    let follow = StoreFollow { client: servers.client().await, store: servers.store().await };
    let bus = servers.shared_bus().await;
    let drills = drills(&servers, bus.clone(), follow);
    // The drill dies after the restore's verdict: its teardown never runs.
    let restored = drills.restore(&plan, "nightly", chrono::Utc::now()).await.expect("the restore half");
    let drill_id = restored.report.drill_id.clone();
    drop(restored);
    let left = volumes_tagged(&east, "lifeboat:request-id", &drill_id).await;
    assert_eq!(left.len(), 2, "the drill's restored volumes are left");
    let ddb = aws_sdk_dynamodb::Client::new(&servers.aws("us-east-1"));
    let left_table = ddb.describe_table().table_name("orders-drill").send().await.expect("the restored table is left");
    let table_arn = left_table.table().and_then(|t| t.table_arn()).expect("its ARN").to_string();
    let stored = stored_report(bus.shared().as_ref(), &drill_id).await.expect("read").expect("stored");
    assert!(stored.finished_at.is_empty() && stored.resources.iter().all(|r| r.validated && !r.torn_down));

    let accounts = Accounts::new(servers.aws("us-east-1"), DEFAULT_ROLE_NAME);
    let mut swept = sweep_leftovers(&accounts, ACCOUNT, "us-east-1").await.expect("the sweep");
    swept.sort();
    let mut expected: Vec<String> = left.iter().filter_map(|v| v.volume_id().map(str::to_string)).collect();
    expected.push(table_arn);
    expected.sort();
    assert_eq!(swept, expected, "the sweep deletes what the drill left, and only that");
    assert!(volumes_tagged(&east, "lifeboat:request-id", &drill_id).await.is_empty());
    let tables = ddb.list_tables().send().await.expect("list tables");
    assert_eq!(tables.table_names(), ["orders"], "the source table stays, the restored one is swept");
    for volume in volumes.iter().filter(|id| id.starts_with("vol-")) {
        let source = east.describe_volumes().volume_ids(volume).send().await.expect("the source volume");
        assert_eq!(source.volumes().len(), 1, "source volumes are never swept");
    }
    // A second sweep finds nothing.
    assert!(sweep_leftovers(&accounts, ACCOUNT, "us-east-1").await.expect("the sweep").is_empty());

    // `lifeboat drill run` runs a whole drill in its own process and prints the report.
    let plan_file = dir.path().join("shop.yaml");
    let output =
        lifeboat(&servers, &["drill", "run", plan_file.to_str().unwrap(), "--rule", "nightly", "--output", "json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: DrillReport = serde_json::from_slice(&output.stdout).expect("the report as JSON");
    assert!(printed.passed() && printed.resources.len() == 3, "{printed:#?}");
    assert!(printed.swept.is_empty(), "nothing was left to sweep: {printed:#?}");
    assert!(volumes_tagged(&east, "lifeboat:request-id", &printed.drill_id).await.is_empty());
    let tables = ddb.list_tables().send().await.expect("list tables");
    assert_eq!(tables.table_names(), ["orders"]);
}
