"""Groups a heaptrack profile's peak memory consumers by the part of skylet
that holds them: BENCHMARKS.md's heap tables.

    heapgroups.py heaptrack.skylet.zst

Runs heaptrack_print, takes each peak consumer's stack and files its bytes
under the innermost frame that names a part (the first pattern, in the
order below, that one of its frames matches, from the allocation site
outwards); frames inlined into skylet's own async functions name nothing
and count as "everything else".
"""

import collections
import re
import subprocess
import sys

GROUPS = [
    ("kube-runtime's reflector store (PodRecord)", r"reflector|skylet::pods::record"),
    (
        "the controller's scheduler and queues",
        r"kube_runtime::scheduler|HoldUnless|DelayQueue|kube_runtime::controller|skylet::pods::lanes",
    ),
    ("skylet's backend view and bookkeeping (PodTable)", r"skylet::pods::table"),
    ("the simulated backend", r"skylet_mock"),
    ("the pod watch: decoding and list pages in flight", r"serde_json|k8s_openapi|request_events|watcher|TryFlatten"),
    ("hyper, rustls: connections", r"hyper|rustls|h2::|tower"),
    ("status writes", r"skylet::pods::reconcile|skylet::pods::status"),
    ("cost, metrics, telemetry", r"prometheus|skylet::cost|skylet::metrics|opentelemetry|tracing_subscriber"),
]


def size(text):
    m = re.match(r"([0-9.]+)([KMG]?)", text)
    return float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[m.group(2)]


def main():
    args = ["heaptrack_print", "--print-peaks", "1", "--print-allocators", "0", "--print-temporary", "0"]
    args += ["--print-leaks", "0", "--peak-limit", "400", "--sub-peak-limit", "60", sys.argv[1]]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    peaks = out.split("PEAK MEMORY CONSUMERS", 1)[1]
    peaks = re.split(r"\n[A-Z][A-Z ]+\n", peaks)[0]
    sums = collections.Counter()
    for block in re.split(r"\n(?=\s*[0-9.]+[KMG]? consumed over)", peaks):
        m = re.match(r"\s*([0-9.]+[KMG]?) consumed over", block)
        if not m:
            continue
        frames = [f.strip() for f in block.splitlines()[1:] if f.strip() and not f.strip().startswith(("in ", "at "))]
        group = next(
            (name for f in frames for name, rx in GROUPS if re.search(rx, f)),
            "everything else",
        )
        sums[group] += size(m.group(1))
    print("| MB at the peak | what |")
    print("|---|---|")
    for name, total in sums.most_common():
        print(f"| {total / 1e6:.1f} | {name} |")
    peak = re.search(r"peak heap memory consumption: (.*)", out)
    print(f"\npeak heap: {peak.group(1) if peak else '?'}")


if __name__ == "__main__":
    main()
