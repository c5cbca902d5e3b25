"""Sets up a fresh moto server for skylet's aws-ecs backend; prints the result as JSON.

    moto-setup.py URL NAME

ECS cluster NAME, a VPC with DNS hostnames on (moto's RunTask with awsvpc needs
them), a subnet, a security group, the log group /skylet/NAME, and the ecs::task
state manager set so that tasks stay RUNNING (moto otherwise advances a task one
state per DescribeTasks until it is STOPPED).
"""

import json
import sys
import urllib.request

import boto3

url, name = sys.argv[1], sys.argv[2]
region = "us-east-1"
zone = "us-east-1a"
kw = {"endpoint_url": url, "region_name": region, "aws_access_key_id": "test", "aws_secret_access_key": "test"}

ecs = boto3.client("ecs", **kw)
ec2 = boto3.client("ec2", **kw)
logs = boto3.client("logs", **kw)

ecs.create_cluster(clusterName=name)
vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone=zone)["Subnet"]["SubnetId"]
sg = ec2.create_security_group(GroupName="skylet-tasks", Description="skylet tasks", VpcId=vpc)["GroupId"]
log_group = f"/skylet/{name}"
logs.create_log_group(logGroupName=log_group)

req = urllib.request.Request(
    f"{url}/moto-api/state-manager/set-transition",
    data=json.dumps({"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1000000}}).encode(),
    method="POST",
)
urllib.request.urlopen(req).read()

json.dump(
    {
        "endpoint": url,
        "region": region,
        "zone": zone,
        "cluster": name,
        "vpc": vpc,
        "subnet": subnet,
        "security_group": sg,
        "log_group": log_group,
    },
    sys.stdout,
)
print()
