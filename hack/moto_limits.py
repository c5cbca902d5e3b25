"""Amazon ECS's and AWS Fargate's API rate limits for moto's server (hack/moto-server.py).

Token buckets as ECS applies them, per account and Region (one moto server is
one account here): a call that finds a bucket of its action empty is answered
as ECS answers it, HTTP 400 with `x-amzn-ErrorType: ThrottlingException` and
`{"__type": "ThrottlingException", "message": "Rate exceeded"}` (botocore's
and aws-smithy's retry logic recognise throttling by that code). A `RunTask`
also takes one token of the Fargate launch bucket per task it starts.

Published figures (bucket: capacity, refill per second; actions):
  docs.aws.amazon.com/AmazonECS/latest/APIReference/request-throttling.html
    cluster-read 50/20: DescribeClusters, ListClusters
    cluster-resource-modify 100/40: RunTask, StartTask, StopTask, ExecuteCommand, ...
    cluster-resource-read 100/20: DescribeTasks, ListTasks, ...
    task-definition-modify 20/1: RegisterTaskDefinition, DeregisterTaskDefinition
    task-definition-read 50/20, task-definition-delete 5/1, tag-modify 20/10, tag-read 50/20
  docs.aws.amazon.com/AmazonECS/latest/developerguide/throttling.html
    fargate-launch 100/20, fargate-spot-launch 100/20: tasks launched

Off unless `SKYLET_MOTO_RATE_LIMITS` is set: `published`, optionally followed by
changes `NAME=CAPACITY:REFILL` or `NAME=off` (comma-separated), e.g.
`published,fargate-launch=10:2`.

`GET /_skylet/limits` answers what each bucket admitted and throttled (with
the times, in seconds since the server started, of its first and last
admitted call) and the calls per action, as JSON.
"""

import io
import json
import os
import threading
import time

ECS_TARGET = "AmazonEC2ContainerServiceV20141113."

PUBLISHED = [
    ("cluster-read", 50, 20.0, ["DescribeClusters", "ListClusters"]),
    (
        "cluster-resource-modify",
        100,
        40.0,
        [
            "DeleteAttributes",
            "DeregisterContainerInstance",
            "ExecuteCommand",
            "PutAttributes",
            "RunTask",
            "StartTask",
            "StopTask",
            "UpdateContainerAgent",
            "UpdateContainerInstancesState",
        ],
    ),
    (
        "cluster-resource-read",
        100,
        20.0,
        ["DescribeContainerInstances", "DescribeTasks", "ListAttributes", "ListContainerInstances", "ListTasks"],
    ),
    ("task-definition-modify", 20, 1.0, ["DeregisterTaskDefinition", "RegisterTaskDefinition"]),
    ("task-definition-read", 50, 20.0, ["DescribeTaskDefinition", "ListTaskDefinitions", "ListTaskDefinitionFamilies"]),
    ("task-definition-delete", 5, 1.0, ["DeleteTaskDefinitions"]),
    ("tag-modify", 20, 10.0, ["TagResource", "UntagResource"]),
    ("tag-read", 50, 20.0, ["ListTagsForResource"]),
    ("fargate-launch", 100, 20.0, ["FargateLaunch"]),
    ("fargate-spot-launch", 100, 20.0, ["FargateSpotLaunch"]),
]

STARTED = time.monotonic()


class Bucket:
    """A token bucket with continuous refill, full at the start."""

    def __init__(self, name, capacity, refill, actions):
        self.name, self.capacity, self.refill, self.actions = name, capacity, refill, actions
        self.tokens = float(capacity)
        self.at = time.monotonic()
        self.admitted = self.throttled = 0
        self.first = self.last = None

    def take(self, now):
        """One token if there is one."""
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.refill)
        self.at = now
        if self.tokens < 1.0:
            self.throttled += 1
            return False
        self.tokens -= 1.0
        self.admitted += 1
        t = now - STARTED
        self.first = t if self.first is None else self.first
        self.last = t
        return True

    def stats(self):
        return {
            "capacity": self.capacity,
            "refillPerSecond": self.refill,
            "admitted": self.admitted,
            "throttled": self.throttled,
            "firstAdmittedAt": self.first,
            "lastAdmittedAt": self.last,
        }


def buckets_from(spec):
    """The buckets `SKYLET_MOTO_RATE_LIMITS` asks for (see the module docs)."""
    parts = [p.strip() for p in (spec or "").split(",") if p.strip()]
    if not parts:
        return []
    if parts[0] != "published":
        raise SystemExit(f"SKYLET_MOTO_RATE_LIMITS must start with 'published': {spec!r}")
    figures = {name: (cap, refill, actions) for name, cap, refill, actions in PUBLISHED}
    for change in parts[1:]:
        name, _, value = change.partition("=")
        if name not in figures:
            raise SystemExit(f"SKYLET_MOTO_RATE_LIMITS: no bucket {name!r}")
        if value == "off":
            del figures[name]
            continue
        cap, _, refill = value.partition(":")
        figures[name] = (int(cap), float(refill), figures[name][2])
    return [Bucket(name, cap, refill, actions) for name, (cap, refill, actions) in figures.items()]


class Limits:
    """The buckets in force and the calls seen, behind one lock."""

    def __init__(self, buckets):
        self.buckets = buckets
        self.lock = threading.Lock()
        self.calls = {}
        self.throttled_calls = {}

    def admit(self, action, body):
        """Whether the call may go on; takes its tokens, bucket by bucket."""
        wanted = [action]
        if action == "RunTask":
            wanted += launches(body)
        with self.lock:
            self.calls[action] = self.calls.get(action, 0) + 1
            now = time.monotonic()
            for want in wanted:
                for b in self.buckets:
                    if want in b.actions and not b.take(now):
                        self.throttled_calls[action] = self.throttled_calls.get(action, 0) + 1
                        return False
            return True

    def stats(self):
        with self.lock:
            return {
                "buckets": {b.name: b.stats() for b in self.buckets},
                "calls": dict(self.calls),
                "throttled": dict(self.throttled_calls),
            }


def launches(body):
    """One launch per task a RunTask starts on Fargate (on demand or Spot)."""
    try:
        req = json.loads(body or b"{}")
    except ValueError:
        return []
    count = max(1, min(10, int(req.get("count") or 1)))
    providers = [p.get("capacityProvider") for p in req.get("capacityProviderStrategy") or []]
    if "FARGATE_SPOT" in providers:
        return ["FargateSpotLaunch"] * count
    if req.get("launchType") == "FARGATE" or "FARGATE" in providers:
        return ["FargateLaunch"] * count
    return []


def respond(start_response, status, body, headers=()):
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(data))), *headers]
    )
    return [data]


def install(app_class):
    """Wraps the WSGI application class of moto's server with the limits."""
    limits = Limits(buckets_from(os.environ.get("SKYLET_MOTO_RATE_LIMITS")))
    call = app_class.__call__

    def limited(self, environ, start_response):
        if environ.get("PATH_INFO") == "/_skylet/limits":
            return respond(start_response, "200 OK", limits.stats())
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith(ECS_TARGET):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
            if not limits.admit(target[len(ECS_TARGET) :], body):
                return respond(
                    start_response,
                    "400 Bad Request",
                    {"__type": "ThrottlingException", "message": "Rate exceeded"},
                    [("x-amzn-ErrorType", "ThrottlingException")],
                )
        return call(self, environ, start_response)

    app_class.__call__ = limited
