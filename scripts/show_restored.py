"""Lists the volumes a request restored (found by the lifeboat:request-id tag) with their tags."""
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
