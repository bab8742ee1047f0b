"""Seeds the local AWS emulator for the demo and writes the demo's restore request.

us-east-1: three `app=web,env=prod` volumes, each snapshotted twice, once on each side of a
point in time T, so the request's BEFORE rule visibly picks the older snapshot.
us-west-2: two `app=db` volumes with one snapshot each, restored cross-region to us-east-1.
DynamoDB: an `app=shop` table with TTL, point-in-time recovery, a stream, an item and a backup.
"""
import datetime
import sys
import time

import boto3

out = sys.argv[1]


def ec2(region):
    return boto3.client("ec2", region_name=region)


def volume(client, zone, size, tags):
    spec = [{"ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    return client.create_volume(AvailabilityZone=zone, Size=size, VolumeType="gp2", TagSpecifications=spec)["VolumeId"]


def snapshot(client, volume_id, tags, label):
    tags = dict(tags, snapshot=label)
    spec = [{"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    return client.create_snapshot(VolumeId=volume_id, Description=f"demo {label}", TagSpecifications=spec)["SnapshotId"]


east, west = ec2("us-east-1"), ec2("us-west-2")
web_tags = {"app": "web", "env": "prod"}
web = [(volume(east, "us-east-1a", 8 + i, dict(web_tags, Name=f"web-{i}")), f"web-{i}") for i in range(3)]
db_tags = {"app": "db", "env": "prod"}
db = [(volume(west, "us-west-2a", 20 + i, dict(db_tags, Name=f"db-{i}")), f"db-{i}") for i in range(2)]

old = [snapshot(east, v, dict(web_tags, Name=n), "nightly-old") for v, n in web]
time.sleep(1.5)
point_in_time = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
time.sleep(1.5)
new = [snapshot(east, v, dict(web_tags, Name=n), "nightly-new") for v, n in web]
dbs = [snapshot(west, v, dict(db_tags, Name=n), "nightly") for v, n in db]
print(f"seeded us-east-1: 3 web volumes, snapshots before {point_in_time.isoformat()}: {old}, after: {new}")
print(f"seeded us-west-2: 2 db volumes, snapshots {dbs}")

dynamodb = boto3.client("dynamodb", region_name="us-east-1")
dynamodb.create_table(
    TableName="orders",
    AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
    KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
    BillingMode="PAY_PER_REQUEST",
    StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    Tags=[{"Key": "app", "Value": "shop"}, {"Key": "team", "Value": "payments"}],
)
dynamodb.update_time_to_live(TableName="orders", TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})
dynamodb.update_continuous_backups(TableName="orders", PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
dynamodb.put_item(TableName="orders", Item={"id": {"S": "order-1"}, "total": {"N": "42"}})
backup = dynamodb.create_backup(TableName="orders", BackupName="nightly")["BackupDetails"]["BackupArn"]
print(f"seeded DynamoDB: table orders (TTL, PITR, stream, tags) with backup {backup}")

with open(out, "w") as f:
    f.write(f"""# Written by scripts/seed_demo.py for the demo.
restore_sets:
  - name: web-prod
    source:
      region: us-east-1
      tags: {{app: web, env: prod}}
      point_in_time: {{time: "{point_in_time.isoformat().replace('+00:00', 'Z')}", direction: before}}
    resource_types: [ebs]
    target:
      ebs:
        availability_zone: us-east-1b
        volume_type: gp3
        iops: 4000
        throughput: 250
        tags: {{restored-by: lifeboat-demo}}
  - name: db-to-us-east-1
    source:
      region: us-west-2
      tags: {{app: db}}
    resource_types: [ebs]
    target:
      ebs:
        region: us-east-1
        availability_zone: us-east-1c
        volume_type: io2
        iops: 6000
        tags: {{restored-by: lifeboat-demo, dr: "true"}}
  - name: orders-table
    source:
      region: us-east-1
      tags: {{app: shop}}
    resource_types: [dynamodb]
    target:
      dynamodb:
        name_suffix: restored
        tags: {{restored-by: lifeboat-demo}}
""")
