"""Groups a heaptrack profile's peak memory consumers by the part of skylet
that holds them: BENCHMARKS.md's heap tables.

    heapgroups.py heaptrack.skylet.zst            the peak
    heapgroups.py --held heaptrack.skylet.zst     what is still allocated
                                                  when the profile ends

With --held, a profile whose recording ends while the pods are held (skylet
killed with SIGKILL then, so that no shutdown frees anything) gives the live
heap while holding. Runs heaptrack_print, takes each consumer's stack and
files its bytes under the innermost frame that names a part (the first
pattern, in the order below, that one of its frames matches, from the
allocation site outwards); frames inlined into skylet's own async functions name nothing
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
    held = sys.argv[1] == "--held"
    profile = sys.argv[-1]
    peaks, leaks = ("0", "1") if held else ("1", "0")
    args = ["heaptrack_print", "--print-peaks", peaks, "--print-allocators", "0", "--print-temporary", "0"]
    args += ["--print-leaks", leaks, "--peak-limit", "400", "--sub-peak-limit", "60", profile]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    section, verb = ("MEMORY LEAKS", "leaked") if held else ("PEAK MEMORY CONSUMERS", "consumed")
    peaks = out.split(section, 1)[1]
    peaks = re.split(r"\n[A-Z][A-Z ]+\n", peaks)[0]
    sums = collections.Counter()
    for block in re.split(rf"\n(?=\s*[0-9.]+[KMG]? {verb} over)", peaks):
        # the call stacks under each top entry ("... calls from:"), not
        # the top entries themselves (they would count twice)
        m = re.match(rf"\s*([0-9.]+[KMG]?) {verb} over \d+ calls from:", block)
        if not m:
            continue
        frames = [f.strip() for f in block.splitlines()[1:] if f.strip() and not f.strip().startswith(("in ", "at "))]
        group = next(
            (name for f in frames for name, rx in GROUPS if re.search(rx, f)),
            "everything else",
        )
        sums[group] += size(m.group(1))
    print(f"| MB {'still allocated at the end' if held else 'at the peak'} | what |")
    print("|---|---|")
    for name, total in sums.most_common():
        print(f"| {total / 1e6:.1f} | {name} |")
    peak = re.search(r"peak heap memory consumption: (.*)", out)
    print(f"\npeak heap: {peak.group(1) if peak else '?'}")
    if held:
        total = re.search(r"total memory leaked: (.*)", out)
        print(f"still allocated at the end: {total.group(1) if total else '?'}")


if __name__ == "__main__":
    main()
