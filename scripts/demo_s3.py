"""The demo's S3 part, against the local emulator.

seed: a versioned bucket `demo-assets` (us-east-1) with three objects.
damage: prints the time just before it, then overwrites index.html, deletes logo.png and adds
        junk.txt, as a bad deploy would.
show BUCKET [PREFIX]: the bucket's current objects with their bytes.
"""
import datetime
import sys
import time

import boto3

s3 = boto3.client("s3", region_name="us-east-1")
command = sys.argv[1]

if command == "seed":
    s3.create_bucket(Bucket="demo-assets")
    s3.put_bucket_versioning(Bucket="demo-assets", VersioningConfiguration={"Status": "Enabled"})
    s3.create_bucket(Bucket="demo-restored")
    for key, body in [("index.html", "<h1>shop</h1>"), ("logo.png", "PNG..."), ("css/site.css", "body{}")]:
        s3.put_object(Bucket="demo-assets", Key=key, Body=body.encode())
elif command == "damage":
    time.sleep(1.1)
    print(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"))
    time.sleep(1.1)
    s3.put_object(Bucket="demo-assets", Key="index.html", Body=b"<h1>oops</h1>")
    s3.delete_object(Bucket="demo-assets", Key="logo.png")
    s3.put_object(Bucket="demo-assets", Key="junk.txt", Body=b"junk")
elif command == "show":
    bucket, prefix = sys.argv[2], (sys.argv[3] if len(sys.argv) > 3 else "")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    for item in sorted(listed, key=lambda o: o["Key"]):
        body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode(errors="replace")
        print(f"  s3://{bucket}/{item['Key']}: {body}")
    if not listed:
        print(f"  s3://{bucket}/{prefix}: empty")
else:
    sys.exit(f"unknown command {command}: seed, damage or show")
