//! Request input under stress. Limits: too many sets are refused by the count, and a rejection
//! with hundreds of problems carries the first ones and how many more there are. Fuzzing: nothing
//! a request arrives as (bytes on the bus, a request file, Clumio input) panics, and every
//! rejection names a field.
//!
//! The fuzz targets are proptest properties (cargo-fuzz needs a nightly toolchain), each starting
//! from the corpus in fuzz/corpus/ (entries mutated byte by byte) or from structured generators. Each target runs `LIFEBOAT_FUZZ_CASES` cases (256 by default, so that CI runs a
//! bounded number; `LIFEBOAT_FUZZ_CASES=100000` runs longer). A failing input is a bug: fix it,
//! and add the input to the corpus (failures are not persisted elsewhere).
//!
//! What "names a field" means, per path:
//! - protobuf: bytes that do not decode are rejected with field `<message>`; a decoded request's
//!   errors name `request_id`, `restore_sets`, `options.<field>` or `restore_sets[i].<field>`
//!   with `i` one of its sets;
//! - request files: conversion errors name `restore_sets[i].<field>` with `i` one of the file's
//!   sets; a file that is not a request file names the path of the bad value (`restore_sets[0].
//!   source.region: ...`), a top-level field in backticks (missing or unknown field), or the
//!   document's own type; text that is not YAML or JSON at all is refused as a whole (`$`), at
//!   the line and column the parser gives;
//! - Clumio input: `<document>` when it is not an object, `RestoreGroups`, `DefaultInput[.Type]`,
//!   or a key of the group (`RestoreGroups[i].key`, or `key` in the flat form) that the input
//!   gives, its DefaultInput gives, or that Clumio requires.

use std::collections::HashMap;

use lifeboat_cli::clumio;
use lifeboat_cli::request_file::{self, RequestFileError};
use lifeboat_common::validate::{validate_request, Policy, MAX_SETS};
use lifeboat_discovery::service::{decode_request, MAX_REJECTION_ERRORS};
use lifeboat_proto as pb;
use lifeboat_tests::*;
use proptest::collection::{hash_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{self, Index};
use prost::Message;
use serde_json::Value;

fn set(index: usize) -> pb::RestoreSet {
    let target = pb::EbsTarget { availability_zone: "us-east-1b".into(), ..Default::default() };
    ebs_set(&format!("set-{index}"), "us-east-1", &[("app", "caps")], None, target)
}

#[test]
fn a_request_with_more_sets_than_the_cap_is_refused_naming_restore_sets() {
    let fits = request("caps-fit", (0..MAX_SETS).map(set).collect());
    assert_eq!(validate_request(&fits, &Policy::default()), Ok(()));
    let over = request("caps-over", (0..=MAX_SETS).map(set).collect());
    let errors = validate_request(&over, &Policy::default()).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field, "restore_sets");
    assert!(errors[0].message.contains("101"), "{}", errors[0].message);
}

#[test]
fn too_many_tags_and_long_strings_are_refused_by_field() {
    let mut wide = set(0);
    let source = wide.source.as_mut().unwrap();
    source.tags = (0..51).map(|i| (format!("k{i}"), "v".to_string())).collect();
    source.names = vec!["n".repeat(300)];
    let errors = validate_request(&request("caps-tags", vec![wide]), &Policy::default()).unwrap_err();
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert!(fields.contains(&"restore_sets[0].source.tags"), "{errors:?}");
    assert!(fields.contains(&"restore_sets[0].source.names[0]"), "{errors:?}");
    let mut huge = request("caps-max-tasks", vec![set(0)]);
    huge.options = Some(pb::RestoreOptions { max_tasks: u32::MAX, ..Default::default() });
    let errors = validate_request(&huge, &Policy::default()).unwrap_err();
    assert_eq!(errors[0].field, "options.max_tasks");
}

async fn a_rejection_with_500_errors_carries_the_first_20_and_a_count(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    // 100 sets, each with five bad fields.
    let sets = (0..MAX_SETS)
        .map(|index| {
            let mut bad = set(index);
            bad.resource_types = vec![42, 43, 44, 45, 46];
            bad
        })
        .collect();
    client.submit(&request("caps-500", sets)).await.unwrap();
    let summary = final_summary(&client, "caps-500").await;
    assert_eq!(verdict(&summary), pb::Verdict::Rejected, "{summary:#?}");
    let rejected = summary.rejection.expect("a rejected summary says why");
    assert_eq!(rejected.errors.len(), MAX_REJECTION_ERRORS + 1);
    assert_eq!(rejected.field, "restore_sets[0].resource_types[0]");
    assert!(rejected.errors[..MAX_REJECTION_ERRORS].iter().all(|e| e.field.starts_with("restore_sets[")));
    assert_eq!(rejected.errors[MAX_REJECTION_ERRORS].message, "and 480 more");
}

#[tokio::test]
async fn a_large_rejection_is_capped_over_nats() {
    a_rejection_with_500_errors_carries_the_first_20_and_a_count(Transport::Nats).await;
}

/// Cases per target: `LIFEBOAT_FUZZ_CASES`, 256 by default.
fn fuzz_config() -> ProptestConfig {
    let cases = match std::env::var("LIFEBOAT_FUZZ_CASES") {
        Ok(value) => value.parse().unwrap_or_else(|_| panic!("LIFEBOAT_FUZZ_CASES={value} is not a number of cases")),
        Err(_) => 256,
    };
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// One corpus file; `valid-` entries must be accepted, `invalid-` ones rejected by field.
#[derive(Clone, Debug)]
struct Entry {
    name: String,
    bytes: Vec<u8>,
}

impl Entry {
    fn valid(&self) -> bool {
        self.name.starts_with("valid-")
    }

    /// The text as the CLI would read it; a file that is not UTF-8 is refused by the CLI before
    /// parsing, so mutated bytes are read lossily to keep reaching the parser.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

fn corpus(kind: &str) -> Vec<Entry> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(kind);
    let mut entries: Vec<Entry> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            Entry { name: path.file_name().expect("file name").to_string_lossy().into_owned(), bytes }
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        entries.iter().any(Entry::valid) && entries.iter().any(|e| !e.valid()),
        "{kind}: valid and invalid entries"
    );
    entries
}

/// Byte-level changes to a corpus entry.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    /// The start of this entry up to `at`, then another entry from `from`.
    Splice {
        at: Index,
        other: Index,
        from: Index,
    },
}

/// Tokens that make text inputs take other branches than random bytes do.
const TOKENS: &[&str] = &[
    "\"",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "-",
    "\n",
    " ",
    "null",
    "true",
    "-1",
    "0",
    "1e999",
    "18446744073709551616",
    "\"\"",
    "[This field will follow default input]",
    "us-east-1",
    "us-east-1a",
    "ebs",
    "rds-cluster",
    "after",
    "2026-11-20T12:00:00Z",
    "&a",
    "*a",
    "!!binary",
    "~",
    "\t",
    "\u{feff}",
    "\\u0000",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    let insert = prop_oneof![vec(any::<u8>(), 1..8), sample::select(TOKENS).prop_map(|t| t.as_bytes().to_vec())];
    prop_oneof![
        (any::<Index>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), insert).prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<Index>(), any::<Index>(), any::<Index>()).prop_map(|(at, other, from)| Mutation::Splice {
            at,
            other,
            from
        }),
    ]
}

/// A corpus entry (named as it is, so that its extension picks the parser) after 1 to 6 mutations.
fn mutated(entries: Vec<Entry>) -> impl Strategy<Value = Entry> {
    (any::<Index>(), vec(mutation(), 1..6)).prop_map(move |(pick, mutations)| {
        let mut entry = entries[pick.index(entries.len())].clone();
        for mutation in mutations {
            let bytes = &mut entry.bytes;
            match mutation {
                Mutation::Flip(at, mask) if !bytes.is_empty() => {
                    let at = at.index(bytes.len());
                    bytes[at] ^= mask;
                }
                Mutation::Flip(..) => {}
                Mutation::Truncate(at) => bytes.truncate(at.index(bytes.len() + 1)),
                Mutation::Insert(at, insert) => {
                    let at = at.index(bytes.len() + 1);
                    bytes.splice(at..at, insert);
                }
                Mutation::Splice { at, other, from } => {
                    let other = &entries[other.index(entries.len())].bytes;
                    bytes.truncate(at.index(bytes.len() + 1));
                    bytes.extend_from_slice(&other[from.index(other.len() + 1)..]);
                }
            }
        }
        entry
    })
}

/// A validation error's field is one of `request`'s (see the module comment).
fn names_request_field(request: &pb::RestoreRequest, field: &str) -> bool {
    if matches!(field, "request_id" | "restore_sets") || field.strip_prefix("options.").is_some_and(|f| !f.is_empty()) {
        return true;
    }
    let Some((index, rest)) = field.strip_prefix("restore_sets[").and_then(|rest| rest.split_once(']')) else {
        return false;
    };
    index.parse::<usize>().is_ok_and(|index| index < request.restore_sets.len())
        && [".name", ".source", ".resource_types", ".target"].iter().any(|f| rest.starts_with(f))
}

/// Validates a decoded request: accepted, or every error names one of its fields; and the
/// request survives encoding and decoding unchanged, so it validates the same on the bus.
fn check_request(request: &pb::RestoreRequest) -> Result<bool, TestCaseError> {
    let verdict = validate_request(request, &Policy::default());
    if let Err(errors) = &verdict {
        prop_assert!(!errors.is_empty());
        for error in errors {
            prop_assert!(names_request_field(request, &error.field), "{error:?} names no field of the request");
            prop_assert!(!error.message.is_empty(), "{error:?}");
        }
    }
    let again = decode_request(&request.encode_to_vec());
    prop_assert_eq!(again.as_ref(), Ok(request));
    prop_assert_eq!(validate_request(&again.unwrap(), &Policy::default()), verdict.clone());
    Ok(verdict.is_ok())
}

/// Bytes from the bus, as discovery reads them: true when the request is accepted.
fn check_payload(bytes: &[u8]) -> Result<bool, TestCaseError> {
    match decode_request(bytes) {
        Ok(request) => check_request(&request),
        Err(error) => {
            prop_assert_eq!(error.field.as_str(), "<message>");
            prop_assert!(error.message.starts_with("not a lifeboat.v1.RestoreRequest: "), "{error:?}");
            Ok(false)
        }
    }
}

/// Keys of a Clumio group that it may lack and be told about.
const CLUMIO_REQUIRED: &[&str] = &[
    "ResourceType",
    "target_aws_az",
    "target_az",
    "target_vpc_native_id",
    "target_subnet_native_id",
    "target_subnet_group_name",
    "target_rds_name",
    "change_set_name",
    "search_pg_name",
    "target_bucket",
    "search_tag_key",
];

/// A Clumio conversion error's field is one of `document`'s (see the module comment).
fn names_clumio_field(document: &Value, field: &str) -> bool {
    let Some(top) = document.as_object() else { return field == "<document>" };
    let defaults = top.get("DefaultInput").and_then(Value::as_object);
    let mut default_keys: Vec<&String> = Vec::new();
    for (key, value) in defaults.into_iter().flatten() {
        default_keys.push(key);
        default_keys.extend(value.as_object().into_iter().flat_map(|section| section.keys()));
    }
    let (scope, rest) = if let Some(rest) = field.strip_prefix("RestoreGroups[") {
        let Some((index, rest)) = rest.split_once(']') else { return false };
        let groups = top.get("RestoreGroups").and_then(Value::as_array);
        let Some(group) = index.parse::<usize>().ok().and_then(|index| groups?.get(index)) else { return false };
        (group.as_object(), rest)
    } else if let Some(rest) = field.strip_prefix("DefaultInput") {
        let Some(defaults) = defaults else { return rest.is_empty() && top.contains_key("DefaultInput") };
        // A section is named as the field shows it: an empty key quoted, and followed by `.`
        // or `[` when the field is inside it.
        let shown = |key: &str| if key.is_empty() { "\"\"".to_string() } else { key.to_string() };
        let inside = |r: &str, key: &str| {
            let key = shown(key);
            r.strip_prefix(key.as_str()).is_some_and(|after| after.starts_with('.') || after.starts_with('['))
        };
        match rest.strip_prefix('.').and_then(|r| defaults.iter().find(|(k, _)| inside(r, k))) {
            Some((key, Value::Object(section))) => (Some(section), &rest[shown(key).len() + 1..]),
            _ => (Some(defaults), rest),
        }
    } else if field == "RestoreGroups" {
        return top.contains_key("RestoreGroups");
    } else {
        // The flat form: the document is the group; no leading dot.
        (Some(top), field)
    };
    let rest = match (rest, scope == Some(top)) {
        ("", true) => return false,
        ("", false) => return true,
        (rest, true) => rest,
        (rest, false) => match rest.strip_prefix('.') {
            Some(rest) if !rest.is_empty() => rest,
            _ => return false,
        },
    };
    let named = |key: &str| {
        // An empty key is shown quoted.
        let key = if key.is_empty() { "\"\"" } else { key };
        rest == key || rest.starts_with(&format!("{key}[")) || rest.starts_with(&format!("{key}."))
    };
    scope.into_iter().flat_map(|s| s.keys()).any(|k| named(k))
        || default_keys.iter().any(|k| named(k))
        || CLUMIO_REQUIRED.iter().any(|k| named(k))
}

/// The document a request file's text is, when it is one: JSON for `.json`, YAML otherwise.
fn document(name: &str, text: &str) -> Option<Value> {
    if name.ends_with(".json") {
        serde_json::from_str(text).ok()
    } else {
        serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text).ok().and_then(|v| serde_json::to_value(v).ok())
    }
}

/// A file that is not a request file says where (see the module comment).
fn syntax_names_where(name: &str, text: &str, message: &str) -> bool {
    let well_formed = if name.ends_with(".json") {
        serde_json::from_str::<Value>(text).is_ok()
    } else {
        serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text).is_ok()
    };
    // Not YAML or JSON at all: the rejection is of the whole file (`$`), at the place the
    // parser gives (YAML leaves out line 1 column 1).
    if !well_formed {
        return !message.is_empty();
    }
    let top_fields = ["request_id", "dry_run", "options", "restore_sets"];
    let path = message.split_once(": ").map(|(path, _)| path).unwrap_or_default();
    let head = path.split(['.', '[']).next().unwrap_or_default();
    // A YAML document with keys JSON cannot hold is checked by the path alone.
    let present = document(name, text).is_none_or(|document| document.get(head).is_some());
    // A list read as a request file is read field by field (`[0]` is `request_id`).
    let list = path.starts_with('[') && document(name, text).is_some_and(|document| document.is_array());
    // A field in backticks (missing, unknown or duplicate; an empty key shows as ``).
    let field_named = message.contains(" field `");
    // The document itself is of the wrong type.
    let root = message.contains("expected struct RequestFile");
    (top_fields.contains(&head) && present) || list || field_named || root
}

/// A file as `lifeboat restore submit` reads it: true when the request is accepted.
fn check_file(name: &str, text: &str) -> Result<bool, TestCaseError> {
    match request_file::load(name, text, "fuzz-1".into()) {
        Ok(request) => check_request(&request),
        Err(RequestFileError::Syntax { path, message }) => {
            prop_assert_eq!(path.as_str(), name);
            prop_assert!(syntax_names_where(name, text, &message), "{name}: '{message}' says not where");
            Ok(false)
        }
        Err(RequestFileError::Field { field, message }) => {
            let document = document(name, text).expect("a field error comes from a document");
            if clumio::is_clumio(&document) && name.ends_with(".json") {
                prop_assert!(names_clumio_field(&document, &field), "'{field}: {message}' names no Clumio field");
            } else {
                let sets = document.get("restore_sets").and_then(Value::as_array).map_or(0, Vec::len);
                let index = field.strip_prefix("restore_sets[").and_then(|r| r.split_once(']')).map(|(i, _)| i);
                prop_assert!(
                    index.and_then(|i| i.parse::<usize>().ok()).is_some_and(|i| i < sets),
                    "'{field}: {message}' names no set of the file"
                );
            }
            prop_assert!(!message.is_empty());
            Ok(false)
        }
    }
}

/// The corpus entries are wired right: the valid ones accepted, the invalid ones rejected.
fn check_corpus(kind: &str, check: impl Fn(&Entry) -> Result<bool, TestCaseError>) {
    for entry in corpus(kind) {
        let accepted = check(&entry).unwrap_or_else(|e| panic!("{kind}/{}: {e}", entry.name));
        let readable = kind == "protobuf" || std::str::from_utf8(&entry.bytes).is_ok();
        assert_eq!(accepted && readable, entry.valid(), "{kind}/{}: accepted {accepted}", entry.name);
    }
}

#[test]
fn the_corpus_is_accepted_when_valid_and_rejected_by_field_when_not() {
    check_corpus("protobuf", |entry| check_payload(&entry.bytes));
    check_corpus("request_file", |entry| check_file(&entry.name, &entry.text()));
    check_corpus("clumio", |entry| check_file(&entry.name, &entry.text()));
}

/// The bugs the fuzzing found, as a user reads them.
#[test]
fn json_file_errors_and_empty_clumio_keys_name_their_field() {
    let error = |name: &str, text: &str| request_file::load(name, text, "fuzz-1".into()).unwrap_err().to_string();
    let wrong_type = r#"{"restore_sets": [{"name": "x", "source": {"region": 5}, "resource_types": ["ebs"]}]}"#;
    let message = error("r.json", wrong_type);
    assert!(message.starts_with("r.json: restore_sets[0].source.region: invalid type: integer `5`"), "{message}");
    let missing = r#"{"restore_sets": [{"name": "x", "resource_types": ["ebs"]}]}"#;
    let message = error("r.json", missing);
    assert!(message.starts_with("r.json: restore_sets[0]: missing field `source`"), "{message}");
    let nested = r#"{"restore_sets": [{"name": "x", "source": {"region": "us-east-1", "tags": {"a": [1]}}}]}"#;
    let message = error("r.json", nested);
    assert!(message.starts_with("r.json: restore_sets[0].source.tags.a: invalid type: sequence"), "{message}");
    let empty_key = r#"{"RestoreGroups": [{"ResourceType": "DynamoDB", "change_set_name": "br5", "": "what"}]}"#;
    assert_eq!(error("c.json", empty_key), r#"RestoreGroups[0]."": unknown field"#);
}

// Structured generators: requests built field by field, with values near the rules' edges.

fn word() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-z0-9_-]{1,12}",
        1 => Just(String::new()),
        1 => any::<String>(),
        1 => "[a-z]{250,260}",
        1 => sample::select(&["aws:name", "lifeboat:request", " ", "-", "sg-1", "subnet-1", "vpc-1", "arn:aws:iam::123456789012:role/r"][..]).prop_map(String::from),
    ]
    .boxed()
}

fn region() -> BoxedStrategy<String> {
    prop_oneof![
        3 => sample::select(&["us-east-1", "us-west-2", "eu-central-2", "us-gov-west-1"][..]).prop_map(String::from),
        1 => word(),
    ]
    .boxed()
}

fn zone() -> BoxedStrategy<String> {
    prop_oneof![(region(), "[a-f]{0,1}").prop_map(|(region, letter)| region + &letter), word()].boxed()
}

fn account() -> BoxedStrategy<String> {
    prop_oneof![Just(String::new()), "[0-9]{12}", "[0-9]{11,13}", word()].boxed()
}

fn tags() -> BoxedStrategy<HashMap<String, String>> {
    prop_oneof![4 => hash_map(word(), word(), 0..3), 1 => hash_map("k[0-9]{1,3}", Just("v".to_string()), 45..55)]
        .boxed()
}

fn timestamp() -> BoxedStrategy<Option<pb::Timestamp>> {
    option::of(
        (prop_oneof![any::<i64>(), 1_700_000_000..1_800_000_000i64], any::<i32>())
            .prop_map(|(seconds, nanos)| pb::Timestamp { seconds, nanos }),
    )
    .boxed()
}

fn selection() -> BoxedStrategy<Option<pb::source::Selection>> {
    option::of(prop_oneof![
        (timestamp(), -1..4i32, timestamp()).prop_map(|(time, direction, until)| {
            pb::source::Selection::PointInTime(pb::PointInTime { time, direction, until })
        }),
        (timestamp(), timestamp())
            .prop_map(|(start, end)| pb::source::Selection::Window(pb::TimeWindow { start, end })),
    ])
    .boxed()
}

fn source() -> BoxedStrategy<pb::Source> {
    (account(), region(), tags(), selection(), any::<bool>(), vec(word(), 0..3), any::<bool>())
        .prop_map(|(account_id, region, tags, selection, point_in_time_recovery, names, all_resources)| pb::Source {
            account_id,
            region,
            tags,
            selection,
            point_in_time_recovery,
            names,
            all_resources,
        })
        .boxed()
}

fn small_number() -> BoxedStrategy<Option<i32>> {
    option::of(prop_oneof![-1..70000i32, any::<i32>()]).boxed()
}

fn targets() -> BoxedStrategy<pb::Targets> {
    let volume_type =
        prop_oneof![sample::select(&["gp2", "gp3", "io1", "io2", "st1", ""][..]).prop_map(String::from), word()];
    let ebs = (account(), region(), zone(), volume_type, small_number(), small_number(), tags())
        .prop_map(|(account_id, region, availability_zone, volume_type, iops, throughput, tags)| pb::EbsTarget {
            account_id,
            region,
            availability_zone,
            volume_type,
            iops,
            throughput,
            tags,
            ..Default::default()
        })
        .boxed();
    let dynamodb = (account(), region(), word(), word(), tags())
        .prop_map(|(account_id, region, table_name, name_suffix, tags)| pb::DynamoDbTarget {
            account_id,
            region,
            table_name,
            name_suffix,
            tags,
            ..Default::default()
        })
        .boxed();
    let ec2 = (account(), region(), zone(), word(), word(), vec(word(), 0..3), tags())
        .prop_map(|(account_id, region, availability_zone, vpc_id, subnet_id, security_group_ids, tags)| {
            pb::Ec2Target {
                account_id,
                region,
                availability_zone,
                vpc_id,
                subnet_id,
                security_group_ids,
                tags,
                ..Default::default()
            }
        })
        .boxed();
    let rds = (
        (account(), region(), zone(), word(), word()),
        (vec(word(), 0..3), word(), small_number(), small_number(), tags()),
    )
        .prop_map(
            |(
                (account_id, region, availability_zone, db_subnet_group, name),
                (security_group_ids, storage_type, iops, port, tags),
            )| {
                pb::RdsTarget {
                    account_id,
                    region,
                    availability_zone,
                    db_subnet_group,
                    name,
                    security_group_ids,
                    storage_type,
                    iops,
                    port,
                    tags,
                    ..Default::default()
                }
            },
        )
        .boxed();
    let s3 = (account(), region(), word())
        .prop_map(|(account_id, region, bucket)| pb::S3Target { account_id, region, bucket, ..Default::default() })
        .boxed();
    (option::of(ebs), option::of(dynamodb), option::of(ec2), option::of(rds), option::of(s3))
        .prop_map(|(ebs, dynamodb, ec2, rds, s3)| pb::Targets { ebs, dynamodb, ec2, rds, s3, ..Default::default() })
        .boxed()
}

fn restore_set() -> BoxedStrategy<pb::RestoreSet> {
    (word(), option::of(source()), vec(-1..10i32, 0..4), option::of(targets()), word())
        .prop_map(|(name, source, resource_types, target, target_role_arn)| pb::RestoreSet {
            name,
            source,
            resource_types,
            target,
            target_role_arn,
        })
        .boxed()
}

fn restore_request() -> impl Strategy<Value = pb::RestoreRequest> {
    let options = (
        any::<bool>(),
        prop_oneof![0..20_000u32, any::<u32>()],
        prop_oneof![0..200_000u32, any::<u32>()],
        any::<bool>(),
    )
        .prop_map(|(skip_source_tags, max_wait_checks, max_tasks, confirm_large)| pb::RestoreOptions {
            skip_source_tags,
            max_wait_checks,
            max_tasks,
            confirm_large,
        });
    (word(), vec(restore_set(), 0..4), any::<bool>(), option::of(options), timestamp()).prop_map(
        |(request_id, restore_sets, dry_run, options, submitted_at)| pb::RestoreRequest {
            request_id,
            restore_sets,
            dry_run,
            options,
            submitted_at,
            requested_by: String::new(),
            backup_run: None,
        },
    )
}

/// Changes to a JSON document that keep most of its shape: a node replaced, a key removed, a
/// key added (nodes are numbered in preorder).
#[derive(Clone, Debug)]
enum Edit {
    Replace(Index, Value),
    Remove(Index, Index),
    Add(Index, String, Value),
}

fn node_count(value: &Value) -> usize {
    1 + match value {
        Value::Array(items) => items.iter().map(node_count).sum(),
        Value::Object(fields) => fields.values().map(node_count).sum(),
        _ => 0,
    }
}

fn node_mut<'a>(value: &'a mut Value, n: &mut usize) -> Option<&'a mut Value> {
    if *n == 0 {
        return Some(value);
    }
    *n -= 1;
    match value {
        Value::Array(items) => items.iter_mut().find_map(|item| node_mut(item, n)),
        Value::Object(fields) => fields.values_mut().find_map(|field| node_mut(field, n)),
        _ => None,
    }
}

fn apply(document: &mut Value, edit: Edit) {
    let count = node_count(document);
    let at = |index: &Index| index.index(count);
    match edit {
        Edit::Replace(index, value) => *node_mut(document, &mut at(&index)).expect("a node") = value,
        Edit::Remove(index, which) => match node_mut(document, &mut at(&index)).expect("a node") {
            Value::Array(items) if !items.is_empty() => {
                items.remove(which.index(items.len()));
            }
            Value::Object(fields) if !fields.is_empty() => {
                let key = fields.keys().nth(which.index(fields.len())).expect("a key").clone();
                fields.remove(&key);
            }
            _ => {}
        },
        Edit::Add(index, key, value) => match node_mut(document, &mut at(&index)).expect("a node") {
            Value::Array(items) => items.push(value),
            Value::Object(fields) => {
                fields.insert(key, value);
            }
            _ => {}
        },
    }
}

/// Leaves near the rules' edges, and small trees of them.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![any::<i64>(), -2..40_000i64].prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        word().prop_map(Value::String),
        sample::select(TOKENS).prop_map(|t| Value::String(t.to_string())),
        sample::select(&["EBS", "EC2", "RDS", "DynamoDB", "ProtectionGroup", "ebs", "dynamodb", "ec2", "s3"][..])
            .prop_map(|t| Value::String(t.to_string())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((key(), inner), 0..4).prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// Keys of request files and Clumio input, and some that are neither.
fn key() -> impl Strategy<Value = String> {
    const KEYS: &[&str] = &[
        "request_id",
        "restore_sets",
        "options",
        "name",
        "source",
        "region",
        "tags",
        "point_in_time",
        "window",
        "time",
        "direction",
        "until",
        "start",
        "end",
        "resource_types",
        "target",
        "ebs",
        "rds",
        "ec2",
        "dynamodb",
        "availability_zone",
        "iops",
        "names",
        "ResourceType",
        "RestoreGroups",
        "DefaultInput",
        "EBS",
        "EC2",
        "RDS",
        "DynamoDB",
        "ProtectionGroup",
        "source_account",
        "source_region",
        "search_direction",
        "target_az",
        "target_aws_az",
        "target_iops",
        "target_volume_tags",
        "start_search_day_offset",
        "end_search_day_offset",
        "search_tag_key",
        "search_tag_value",
        "target_rds_name",
        "change_set_name",
        "should_power_on",
        "",
    ];
    prop_oneof![4 => sample::select(KEYS).prop_map(String::from), 1 => word()]
}

fn edited(entries: Vec<Entry>) -> impl Strategy<Value = (String, Value)> {
    let documents: Vec<(String, Value)> =
        entries.iter().filter_map(|e| Some((e.name.clone(), document(&e.name, &e.text())?))).collect();
    let edit = prop_oneof![
        (any::<Index>(), json_value()).prop_map(|(at, value)| Edit::Replace(at, value)),
        (any::<Index>(), any::<Index>()).prop_map(|(at, which)| Edit::Remove(at, which)),
        (any::<Index>(), key(), json_value()).prop_map(|(at, key, value)| Edit::Add(at, key, value)),
    ];
    (any::<Index>(), vec(edit, 1..4)).prop_map(move |(pick, edits)| {
        let (name, mut document) = documents[pick.index(documents.len())].clone();
        for edit in edits {
            apply(&mut document, edit);
        }
        (name, document)
    })
}

/// A document as the file it would be: JSON, or YAML for a request file.
fn as_file(name: &str, document: &Value, yaml: bool) -> (String, String) {
    if yaml && !name.ends_with(".json") {
        ("fuzz.yaml".into(), serde_yaml_ng::to_string(document).expect("YAML"))
    } else {
        ("fuzz.json".into(), serde_json::to_string_pretty(document).expect("JSON"))
    }
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn bus_payloads_never_panic_and_rejections_name_a_field(entry in mutated(corpus("protobuf"))) {
        check_payload(&entry.bytes)?;
    }

    #[test]
    fn generated_requests_validate_by_field_and_round_trip(request in restore_request()) {
        check_request(&request)?;
    }

    #[test]
    fn mutated_request_files_never_panic_and_rejections_name_a_field(entry in mutated(corpus("request_file"))) {
        check_file(&entry.name, &entry.text())?;
    }

    #[test]
    fn edited_request_files_never_panic_and_rejections_name_a_field(
        (name, document) in edited(corpus("request_file")),
        yaml in any::<bool>(),
    ) {
        let (name, text) = as_file(&name, &document, yaml);
        check_file(&name, &text)?;
    }

    #[test]
    fn mutated_clumio_input_never_panics_and_rejections_name_a_field(entry in mutated(corpus("clumio"))) {
        check_file(&entry.name, &entry.text())?;
    }

    #[test]
    fn edited_clumio_input_never_panics_and_rejections_name_a_field((name, document) in edited(corpus("clumio"))) {
        let (name, text) = as_file(&name, &document, false);
        check_file(&name, &text)?;
    }

    #[test]
    fn a_request_file_that_converts_reads_back_the_same(
        (name, document) in edited(corpus("request_file")),
        yaml in any::<bool>(),
    ) {
        // A file that parses, written out again by its own types, parses to the same request.
        let (name, text) = as_file(&name, &document, yaml);
        if let Ok(file) = request_file::parse(&name, &text) {
            let again = serde_yaml_ng::to_string(&file).expect("YAML");
            let reread = request_file::parse("again.yaml", &again);
            prop_assert!(reread.is_ok(), "{again}: {reread:?}");
            let strip = |mut request: pb::RestoreRequest| { request.submitted_at = None; request };
            let first = file.into_request("fuzz-1".into()).map(strip).map_err(|e| e.to_string());
            let second = reread.unwrap().into_request("fuzz-1".into()).map(strip).map_err(|e| e.to_string());
            prop_assert_eq!(first, second);
        }
    }
}
