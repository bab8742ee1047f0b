//! `lifeboat backup plan validate`, run as the real binary: the example plan is valid and says
//! when it is next due; a broken plan exits 1 naming every wrong field, in text and JSON.

use std::path::{Path, PathBuf};
use std::process::Output;

fn example_plan() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/backup-plan.yaml")
}

fn validate(args: &[&str]) -> Output {
    std::process::Command::new(crate::traces::lifeboat_binary())
        .args(["backup", "plan", "validate"])
        .args(args)
        .output()
        .expect("run lifeboat")
}

const BROKEN_PLAN: &str = r#"
name: broken
lock: {mode: COMPLIANCE, min_retention_days: 30}
rules:
  - name: nightly
    schedule: "0 25 * * *"
    time_zone: Europe/Atlantis
    start_window: 30m
    selection: {resource_types: [ebs], regions: [us-east-1], tags: {include: {env: prod}}}
    retention: {keep: {daily: 7, weekly: 4}}
    copy_to:
      - {region: west, retention: {days: 60}}
    snapshot_name: nightly
"#;

#[test]
fn the_example_plan_is_valid_and_names_its_next_due_rule() {
    let example = example_plan();
    let output = validate(&[example.to_str().expect("utf-8 path")]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.starts_with("plan prod-nightly is valid: 3 rules, next due 20"), "{stdout}");
    assert!(
        ["(nightly)", "(data-6h)", "(weekly-ami)"].iter().any(|rule| stdout.trim_end().ends_with(rule)),
        "{stdout}"
    );
}

#[test]
fn a_broken_plan_exits_1_with_every_field_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, BROKEN_PLAN).expect("write plan");
    let output = validate(&[path.to_str().expect("utf-8 path")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let fields: Vec<&str> = stderr.lines().filter_map(|line| line.split(": ").next()).collect();
    assert_eq!(
        fields,
        [
            "rules[0].snapshot_name",
            "rules[0].time_zone",
            "rules[0].schedule",
            "rules[0].start_window",
            "rules[0].retention.keep.daily",
            "rules[0].copy_to[0].region",
        ],
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "rules[0].retention.keep.daily: keeps points 7 days, less than the lock's min_retention_days (30)"
        ),
        "{stderr}"
    );

    // The same errors as JSON on stdout.
    let path_text = path.to_str().expect("utf-8 path");
    let output = validate(&["--output", "json", path_text]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(report["valid"], false);
    let json_fields: Vec<&str> =
        report["errors"].as_array().expect("errors").iter().filter_map(|e| e["field"].as_str()).collect();
    assert_eq!(json_fields, fields);
}

#[test]
fn an_unreadable_plan_exits_2_and_a_malformed_one_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.yaml");
    let output = validate(&[missing.to_str().expect("utf-8 path")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.yaml"));

    let malformed = dir.path().join("plan.json");
    std::fs::write(&malformed, "{\"name\": ").expect("write plan");
    let output = validate(&[malformed.to_str().expect("utf-8 path")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("plan.json: "));
}
