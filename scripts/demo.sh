#!/usr/bin/env bash
# README command one: builds Lifeboat, starts nats-server and moto_server on free loopback
# ports, runs every service, seeds volumes and snapshots in two regions and a DynamoDB table
# with a backup, shows the plan of a restore request with three sets (one cross-region, one
# DynamoDB), runs it and lists what was restored, then reads the same restore back through the
# status HTTP API (summary, and the first events of its live event stream). S3: a protection
# group backed up to a vault, rolled back in place after a bad deploy, and restored from the vault.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh

work=.local/demo
rm -rf "$work" && mkdir -p "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

echo "== building"
cargo build --locked --bin lifeboat
lifeboat=target/debug/lifeboat

nats_port=$(python3 scripts/free-port.py)
moto_port=$(python3 scripts/free-port.py)
http_port=$(python3 scripts/free-port.py)
api="http://127.0.0.1:${http_port}"
export NATS_URL="nats://127.0.0.1:${nats_port}"
export AWS_ENDPOINT_URL="http://127.0.0.1:${moto_port}"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1

echo "== starting nats-server (${NATS_URL}) and moto_server (${AWS_ENDPOINT_URL})"
nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$work/jetstream" >"$work/nats.log" 2>&1 & pids+=($!)
moto_server -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do
  if python3 - "$nats_port" "$moto_port" <<'PY' 2>/dev/null
import socket, sys
for port in sys.argv[1:]:
    socket.create_connection(("127.0.0.1", int(port)), timeout=0.2).close()
PY
  then break; fi
  sleep 0.1
done

echo "== starting the services (logs in $work/services.log)"
"$lifeboat" serve all --check-interval 0.5 --http-addr "127.0.0.1:${http_port}" >"$work/services.log" 2>&1 & pids+=($!)

echo "== seeding moto"
.venv/bin/python scripts/seed_demo.py "$work/request.yaml"
echo
cat "$work/request.yaml"

echo
echo "== the catalog: every restorable backup of the web volumes (and any copies in us-west-2)"
"$lifeboat" backups list --source us-east-1 --tag app=web --type ebs --copies-in us-west-2

echo
echo "== dry run: what would be restored, from which snapshot, to where"
"$lifeboat" restore submit "$work/request.yaml" --dry-run --request-id demo-plan --timeout 60

echo
echo "== restore"
status=0
"$lifeboat" restore submit "$work/request.yaml" --watch --request-id demo-restore --timeout 120 || status=$?

echo
echo "== volumes and tables in moto tagged lifeboat:request-id=demo-restore"
.venv/bin/python scripts/show_restored.py demo-restore

echo
echo "== backup: a plan's rule run now, snapshots of the prod web volumes copied to us-west-2"
cat >"$work/plan.yaml" <<'PLAN'
name: demo
tags: {backup-owner: lifeboat-demo}
rules:
  - name: nightly
    schedule: "0 2 * * *"
    selection: {resource_types: [ebs], regions: [us-east-1], tags: {include: {app: web, env: prod}, exclude: {restored-by: lifeboat-demo}}}
    retention: {days: 7}
    copy_to: [{region: us-west-2, retention: {days: 30}}]
PLAN
cat "$work/plan.yaml"
"$lifeboat" backup plan validate "$work/plan.yaml"
"$lifeboat" backup run "$work/plan.yaml" --rule nightly --watch --timeout 120 || status=$?
echo "-- recovery points in us-east-1 and their copies in us-west-2"
"$lifeboat" backup list --region us-east-1 --region us-west-2

echo
echo "== S3: a protection group backed up to a vault in us-west-2, a bad deploy, a rollback, a restore"
.venv/bin/python scripts/demo_s3.py seed
cat >"$work/s3-plan.yaml" <<'PLAN'
name: demo-s3
protection_groups:
  - name: web-assets
    buckets: [{bucket: demo-assets, region: us-east-1}]
vault: {bucket: demo-vault, region: us-west-2, prefix: lifeboat/}
rules:
  - name: assets
    schedule: "0 1 * * *"
    selection: {resource_types: [s3], protection_groups: [web-assets]}
    retention: {days: 35}
PLAN
"$lifeboat" backup plan validate "$work/s3-plan.yaml"
"$lifeboat" backup run "$work/s3-plan.yaml" --rule assets --watch --timeout 120 || status=$?
before=$(.venv/bin/python scripts/demo_s3.py damage)
echo "-- after a bad deploy at ${before} (index.html overwritten, logo.png deleted, junk.txt added)"
.venv/bin/python scripts/demo_s3.py show demo-assets
"$lifeboat" s3 rollback demo-assets --to "$before" --region us-east-1 --watch --timeout 120 || status=$?
echo "-- rolled back in place to ${before}"
.venv/bin/python scripts/demo_s3.py show demo-assets
cat >"$work/s3-restore.yaml" <<REQUEST
restore_sets:
  - name: assets-from-the-vault
    resource_types: [s3]
    source: {region: us-east-1}
    target:
      s3: {protection_group: web-assets, vault_bucket: demo-vault, vault_region: us-west-2, vault_prefix: lifeboat/, bucket: demo-restored, prefix: from-vault/}
REQUEST
"$lifeboat" restore submit "$work/s3-restore.yaml" --watch --request-id demo-s3-restore --timeout 120 || status=$?
echo "-- restored from the vault's newest backup"
.venv/bin/python scripts/demo_s3.py show demo-restored from-vault/

echo
echo "== the same restore through the status API (${api})"
"$lifeboat" probe "$api/readyz" | head -c 300; echo
"$lifeboat" --api-url "$api" restore status demo-restore | tail -4
echo "-- first events of GET $api/v1/requests/demo-restore/events"
python3 - "$api/v1/requests/demo-restore/events" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=30) as stream:
    lines = stream.read().decode().splitlines()
events = [l for l in lines if l.startswith("event:")]
for line in [l for l in lines if l][:6]:
    print(line[:150])
print(f"... {len(events)} events, ending with: {events[-1]}")
PY
exit "$status"
