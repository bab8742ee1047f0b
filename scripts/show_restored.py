"""Lists the volumes and tables a request restored (found by the lifeboat:request-id tag)."""
import sys

import boto3

request_id = sys.argv[1]
for region in ("us-east-1", "us-west-2"):
    client = boto3.client("ec2", region_name=region)
    volumes = client.describe_volumes(Filters=[{"Name": "tag:lifeboat:request-id", "Values": [request_id]}])["Volumes"]
    for v in volumes:
        tags = {t["Key"]: t["Value"] for t in v.get("Tags", [])}
        print(f"{region} {v['AvailabilityZone']} {v['VolumeId']} {v['VolumeType']} iops={v.get('Iops')} "
              f"from {v['SnapshotId']} Name={tags.get('Name')} snapshot={tags.get('snapshot')} restored-by={tags.get('restored-by')}")

dynamodb = boto3.client("dynamodb", region_name="us-east-1")
for name in dynamodb.list_tables()["TableNames"]:
    table = dynamodb.describe_table(TableName=name)["Table"]
    tags = {t["Key"]: t["Value"] for t in dynamodb.list_tags_of_resource(ResourceArn=table["TableArn"])["Tags"]}
    if tags.get("lifeboat:request-id") != request_id:
        continue
    ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    pitr = dynamodb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    stream = table.get("StreamSpecification", {})
    items = dynamodb.scan(TableName=name)["Count"]
    print(f"us-east-1 dynamodb {name} {table['TableStatus']} items={items} "
          f"ttl={ttl.get('TimeToLiveStatus')}:{ttl.get('AttributeName')} "
          f"pitr={pitr['PointInTimeRecoveryDescription']['PointInTimeRecoveryStatus']} "
          f"stream={stream.get('StreamViewType')} app={tags.get('app')} restored-by={tags.get('restored-by')}")
