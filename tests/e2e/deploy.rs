//! The deploy template describes what the code uses: the queues SQS routes to (names, FIFO or
//! not, where the redrive policy points, encryption) and the state table DynamoRecords creates
//! (keys, index, TTL).

use std::collections::BTreeMap;

use lifeboat_common::bus::Queue;
use lifeboat_sqs::QueueKey;
use lifeboat_tests::*;
use serde_yaml_ng::Value;

fn template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/cloudformation.yaml");
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A plain string, or the string of a `!Sub` with the default prefix filled in.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Tagged(tagged) => tagged.value.as_str().unwrap().replace("${Prefix}", "lifeboat-"),
        other => panic!("not a string: {other:?}"),
    }
}

#[tokio::test]
async fn the_cloudformation_template_matches_the_queues_and_table_the_code_uses() {
    let template = template();
    let resources = template["Resources"].as_mapping().unwrap();
    let queue_name = |resource: &str| text(&template["Resources"][resource]["Properties"]["QueueName"]);
    // Queue name -> (FIFO, the queue its redrive policy moves messages to).
    let described: BTreeMap<String, (bool, Option<String>)> = resources
        .values()
        .filter(|r| r["Type"] == "AWS::SQS::Queue")
        .map(|r| {
            let properties = &r["Properties"];
            assert_eq!(properties["SqsManagedSseEnabled"].as_bool(), Some(true), "encrypted: {properties:?}");
            let redrive_target = match &properties["RedrivePolicy"]["deadLetterTargetArn"] {
                Value::Null => None,
                Value::Tagged(get_att) => {
                    let attribute = get_att.value.as_str().unwrap();
                    Some(queue_name(attribute.strip_suffix(".Arn").expect("a queue's Arn")))
                }
                other => panic!("deadLetterTargetArn is not a !GetAtt: {other:?}"),
            };
            (text(&properties["QueueName"]), (properties["FifoQueue"].as_bool().unwrap_or(false), redrive_target))
        })
        .collect();

    let servers = Servers::start().await;
    let bus = servers.sqs();
    let mut expected = BTreeMap::new();
    let queues = [Queue::Requests, Queue::StatusEvents]
        .into_iter()
        .chain(lifeboat_cli::serve::WORK_KINDS.iter().map(|kind| Queue::Work(kind.to_string())));
    for queue in queues {
        let main = bus.target(&QueueKey::main(&queue)).unwrap();
        let dead_letter = bus.target(&QueueKey::dead_letter(&queue)).unwrap();
        let redrive = bus.target(&QueueKey::redrive(&queue)).unwrap();
        expected.insert(main.name, (main.fifo, Some(redrive.name.clone())));
        expected.insert(dead_letter.name, (dead_letter.fifo, None));
        expected.insert(redrive.name, (redrive.fifo, None));
    }
    assert_eq!(described, expected);

    // The table as the code creates it is the table the template describes.
    let table = &resources["StateTable"]["Properties"];
    let ddb = aws_sdk_dynamodb::Client::new(&servers.aws("us-east-1"));
    lifeboat_aggregator::DynamoRecords::new(ddb.clone(), "from-code").create_table().await.unwrap();
    let created = ddb.describe_table().table_name("from-code").send().await.unwrap();
    let created = created.table().unwrap();
    let keys = |schema: &Value| -> Vec<(String, String)> {
        schema
            .as_sequence()
            .unwrap()
            .iter()
            .map(|k| (k["AttributeName"].as_str().unwrap().into(), k["KeyType"].as_str().unwrap().into()))
            .collect()
    };
    let code_keys = |schema: &[aws_sdk_dynamodb::types::KeySchemaElement]| -> Vec<(String, String)> {
        schema.iter().map(|k| (k.attribute_name().to_string(), k.key_type().as_str().to_string())).collect()
    };
    assert_eq!(keys(&table["KeySchema"]), code_keys(created.key_schema()));
    let index = &table["GlobalSecondaryIndexes"][0];
    let created_index = &created.global_secondary_indexes()[0];
    assert_eq!(index["IndexName"].as_str(), created_index.index_name());
    assert_eq!(index["IndexName"].as_str(), Some(lifeboat_aggregator::dynamo::LISTING_INDEX));
    assert_eq!(keys(&index["KeySchema"]), code_keys(created_index.key_schema()));
    assert_eq!(
        index["Projection"]["ProjectionType"].as_str(),
        created_index.projection().and_then(|p| p.projection_type()).map(|p| p.as_str())
    );
    let ttl = ddb.describe_time_to_live().table_name("from-code").send().await.unwrap();
    assert_eq!(
        table["TimeToLiveSpecification"]["AttributeName"].as_str(),
        ttl.time_to_live_description().and_then(|t| t.attribute_name())
    );
}
