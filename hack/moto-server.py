"""moto's server (an AWS emulator) with one fix to its ECS model for skylet's tests.

moto starts ECS tasks RUNNING (its state manager only moves them towards
STOPPED) but leaves every container PENDING forever, which real ECS never
does: a task is RUNNING once its essential containers are. This launcher
gives a described task's containers its own status (RUNNING until the task
is STOPPED), so pods on the aws-ecs backend become Ready as they do on
Fargate. Everything else is moto's server as is.

    moto-server.py -H 127.0.0.1 -p PORT
"""

import sys

import moto_limits
from moto.ecs import models
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.server import main

_describe_tasks = models.EC2ContainerServiceBackend.describe_tasks


def describe_tasks(self, cluster_str, tasks):
    """moto's describe_tasks, with each task's containers in the task's status."""
    described = _describe_tasks(self, cluster_str, tasks)
    for task in described:
        status = "STOPPED" if task.last_status in ("STOPPED", "DELETED") else "RUNNING"
        for container in task.containers:
            container.last_status = status
    return described


models.EC2ContainerServiceBackend.describe_tasks = describe_tasks

# ECS's and Fargate's API rate limits, with SKYLET_MOTO_RATE_LIMITS (hack/moto_limits.py)
moto_limits.install(DomainDispatcherApplication)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
