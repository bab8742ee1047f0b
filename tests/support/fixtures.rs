//! Source resources the tests back up and restore, made the same way everywhere.

use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, Tag};

/// An on-demand table keyed by a string `id`, with `tags`.
pub async fn create_table(ddb: &aws_sdk_dynamodb::Client, name: &str, tags: &[(&str, &str)]) {
    let tags = tags.iter().map(|(k, v)| Tag::builder().key(*k).value(*v).build().expect("a tag"));
    ddb.create_table()
        .table_name(name)
        .attribute_definitions(
            AttributeDefinition::builder().attribute_name("id").attribute_type(ScalarAttributeType::S).build().unwrap(),
        )
        .key_schema(KeySchemaElement::builder().attribute_name("id").key_type(KeyType::Hash).build().unwrap())
        .billing_mode(BillingMode::PayPerRequest)
        .set_tags(Some(tags.collect::<Vec<_>>()).filter(|t| !t.is_empty()))
        .send()
        .await
        .expect("create table");
}
