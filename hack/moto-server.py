"""moto's server (an AWS emulator) with two additions to its ECS model for skylet's tests.

moto starts ECS tasks RUNNING (its state manager only moves them towards
STOPPED) but leaves every container PENDING forever, which real ECS never
does: a task is RUNNING once its essential containers are. This launcher
gives a described task's containers its own status (RUNNING until the task
is STOPPED), so pods on the aws-ecs backend become Ready as they do on
Fargate.

moto has no ECS Exec: RunTask drops `enableExecuteCommand` and
ExecuteCommand is not implemented. This launcher keeps the flag on the
task (DescribeTasks shows it) and answers ExecuteCommand as ECS does: the
task must run with the flag and have the container, `interactive` must be
true, and the answer is a session (`sessionId`, `streamUrl`, `tokenValue`).
The stream URL is `$SKYLET_SSM_STREAM_URL/v1/data-channel/<sessionId>?...`
(the Session Manager data channel emulator of skylet-ssm-emulator; the
real service's `wss://ssmmessages.<region>.amazonaws.com` when unset); the
token is what that emulator needs to run the command: base64 of JSON
`{"sessionId", "task", "container", "command", "env"}`.

Everything else is moto's server as is.

    moto-server.py -H 127.0.0.1 -p PORT
"""

import base64
import json
import os
import sys
import uuid

from moto.core.responses import ActionResult
from moto.ecs import models
from moto.ecs.exceptions import InvalidParameterException
from moto.ecs.responses import EC2ContainerServiceResponse
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.server import main

import moto_limits

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

_run_task = EC2ContainerServiceResponse.run_task


def run_task(self):
    """moto's RunTask, keeping `enableExecuteCommand` on the tasks it started."""
    result = _run_task(self)
    enabled = bool(self._get_param("enableExecuteCommand", False))
    for task in result.result["tasks"]:
        task.enable_execute_command = enabled
    return result


def execute_command(self):
    """ECS ExecuteCommand: a Session Manager session for an interactive command."""
    cluster_str = self._get_param("cluster", "default")
    task_str = self._get_param("task")
    container_name = self._get_param("container")
    command = self._get_param("command")
    if not self._get_param("interactive", False):
        raise InvalidParameterException("Interactive is the only mode supported currently.")
    found = self.ecs_backend.describe_tasks(cluster_str, [task_str])
    if not found:
        raise InvalidParameterException("The specified task could not be found.")
    task = found[0]
    if not getattr(task, "enable_execute_command", False):
        raise InvalidParameterException(
            "The execute command failed because execute command was not enabled when the task "
            "was run or the execute command agent isn't running. Wait and try the request again."
        )
    containers = [c for c in task.containers if container_name in (None, c.name)]
    if not containers:
        raise InvalidParameterException(f"The container {container_name} does not exist in the task.")
    container = containers[0]
    session_id = f"ecs-execute-command-{uuid.uuid4().hex[:17]}"
    base = os.environ.get("SKYLET_SSM_STREAM_URL", f"wss://ssmmessages.{self.region}.amazonaws.com")
    token = {
        "sessionId": session_id,
        "task": task.task_arn,
        "container": container.name,
        "command": command,
        "env": {e["name"]: e["value"] for e in (container.environment or [])},
    }
    return ActionResult(
        {
            "clusterArn": task.cluster_arn,
            "containerArn": container.container_arn,
            "containerName": container.name,
            "interactive": True,
            "session": {
                "sessionId": session_id,
                "streamUrl": f"{base}/v1/data-channel/{session_id}?role=publish_subscribe&cell-number=AAEAAQ",
                "tokenValue": base64.b64encode(json.dumps(token).encode()).decode(),
            },
            "taskArn": task.task_arn,
        }
    )


EC2ContainerServiceResponse.run_task = run_task
EC2ContainerServiceResponse.execute_command = execute_command

# ECS's and Fargate's API rate limits, with SKYLET_MOTO_RATE_LIMITS (hack/moto_limits.py)
moto_limits.install(DomainDispatcherApplication)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
