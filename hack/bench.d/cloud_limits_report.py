"""The tables of `hack/bench cloud-limits` (hack/bench.d/cloud-limits) from its results directory.

    cloud_limits_report.py DIR PODS

Per backend, from DIR/<backend>-burst.json (skylet-bench), -cloud.json (the
emulator's buckets) and -metrics.txt (skylet's metrics): how fast the bucket
that binds the creates admitted them against the fastest it allows (a bucket
of capacity c and refill r admits N creates in (N - c) / r seconds at best),
the share of skylet's requests answered "throttled", and skylet's API calls
per pod over the whole run, by operation.
"""

import json
import re
import sys
from pathlib import Path

# the bucket that binds a burst's creates, and the cloud's stats of the creates
BINDING = {
    "ecs": ("fargate-launch", "fargate-launch", "ecs"),
    "aci": ("writes", "creates-5m", "arm"),
}
METRIC = re.compile(r"^(\w+)\{([^}]*)\}\s+([0-9.eE+-]+)$")


def metrics(path):
    out = []
    for line in path.read_text().splitlines():
        m = METRIC.match(line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            out.append((m.group(1), labels, float(m.group(3))))
    return out


def buckets(backend, cloud):
    return cloud["buckets"] if backend == "ecs" else cloud["limits"]


def row(backend, d, pods):
    burst = json.loads((d / f"{backend}-burst.json").read_text())
    cloud = json.loads((d / f"{backend}-cloud.json").read_text())
    m = metrics(d / f"{backend}-metrics.txt")
    binding, timed, service = BINDING[backend]
    b = buckets(backend, cloud)
    cap, refill = b[binding]["capacity"], b[binding]["refillPerSecond"]
    t = b[timed]
    took = (t["lastAdmittedAt"] or 0) - (t["firstAdmittedAt"] or 0)
    best = max(0.0, (pods - cap) / refill)
    reqs = [
        (lab, v) for name, lab, v in m if name == "skylet_backend_api_requests_total" and lab.get("service") == service
    ]
    throttled = sum(v for lab, v in reqs if lab.get("outcome") == "throttled")
    total = sum(v for _, v in reqs)
    calls = {}
    for name, lab, v in m:
        if name == "skylet_backend_api_calls_total" and v:
            key = f"{lab.get('service')} {lab.get('operation')}"
            calls[key] = calls.get(key, 0) + v
    cloud_throttled = sum(x["throttled"] for x in b.values()) if backend == "ecs" else cloud.get("throttled", 0)
    return {
        "backend": backend,
        "binding": f"`{binding}` {cap} + {refill:g}/s",
        "admitted": t["admitted"],
        "took": took,
        "best": best,
        "ratio": best / took if took > 0 else float("nan"),
        "throttled": throttled,
        "total": total,
        "cloud_throttled": cloud_throttled,
        "running": burst.get("running", {}),
        "delete": burst.get("delete", {}),
        "calls": calls,
    }


def main():
    d, pods = Path(sys.argv[1]), int(sys.argv[2])
    rows = [row(b, d, pods) for b in ("ecs", "aci") if (d / f"{b}-cloud.json").exists()]
    print(f"#### {pods}-pod burst\n")
    print(
        "| backend | binding bucket | creates admitted | in | fastest the bucket allows | achieved / modelled"
        " | skylet requests throttled | cloud answers throttled | all Running after | all gone after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        share = 100 * r["throttled"] / r["total"] if r["total"] else 0
        print(
            f"| {r['backend']} | {r['binding']} | {r['admitted']} | {r['took']:.1f} s | {r['best']:.1f} s"
            f" | **{r['ratio']:.2f}** | {r['throttled']:.0f} of {r['total']:.0f} ({share:.2f}%)"
            f" | {r['cloud_throttled']} | {r['running'].get('seconds', float('nan')):.1f} s"
            f" | {r['delete'].get('seconds', float('nan')):.1f} s |"
        )
    print("\n#### skylet's API calls per pod over the lifecycle (create, Running, delete, confirmed gone)\n")
    ops = sorted({k for r in rows for k in r["calls"]})
    print("| operation | " + " | ".join(r["backend"] for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for op in ops:
        cells = [f"{r['calls'].get(op, 0) / pods:.3f}" if op in r["calls"] else "" for r in rows]
        print(f"| {op} | " + " | ".join(cells) + " |")
    totals = [f"**{sum(r['calls'].values()) / pods:.2f}**" for r in rows]
    print("| all | " + " | ".join(totals) + " |")
    if any(r["backend"] == "aci" for r in rows):
        hours = max(0, pods - 300) * 12 / 3600
        print(
            f"\nAt ACI's default create quota (300 per hour, 100 per 5 minutes) the same {pods} creates"
            f" take at best {hours:.1f} h (300 at once, then one every 12 s)."
        )


if __name__ == "__main__":
    main()
