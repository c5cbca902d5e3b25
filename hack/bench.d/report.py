"""Tables and plots of a `hack/bench full` results directory.

    report.py DIR --docs docs/bench --markdown BENCHMARKS.md

Reads DIR/run.json and DIR/raw/*.json (written by skylet-bench), draws
throughput bars, latency CDFs and RSS over time into --docs as PNG, and
replaces the part of --markdown between the markers
<!-- bench:results:begin --> and <!-- bench:results:end --> with the tables.
"""

import argparse
import glob
import json
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

BEGIN = "<!-- bench:results:begin -->"
END = "<!-- bench:results:end -->"
ORDER = ["skylet", "ceiling", "kwok", "kwok-tuned", "vk", "vk-qps", "fleet3", "fleet3-down", "fleet4"]
FLEETS = ["fleet3", "fleet3-down", "fleet4"]
NAMES = {
    "skylet": "skylet",
    "fleet3": "skylet, 3 backends",
    "fleet3-down": "skylet, 3 backends, one down mid-burst",
    "fleet4": "skylet, 4 backends",
    "ceiling": "ceiling",
    "kwok": "kwok",
    "kwok-tuned": "kwok (parallelism 64)",
    "vk": "virtual-kubelet",
    "vk-qps": "virtual-kubelet (QPS raised)",
}
USERS = {
    "skylet": "skylet",
    "fleet3": "skylet",
    "fleet3-down": "skylet",
    "fleet4": "skylet",
    "ceiling": "bench-ceiling",
    "kwok": "kwok",
    "kwok-tuned": "kwok",
    "vk": "virtual-kubelet",
    "vk-qps": "virtual-kubelet",
}
PEERS = ["kwok", "kwok-tuned", "vk", "vk-qps"]
COLORS = {
    "skylet": "#1f77b4",
    "fleet3": "#9467bd",
    "fleet3-down": "#c5b0d5",
    "fleet4": "#8c564b",
    "ceiling": "#7f7f7f",
    "kwok": "#2ca02c",
    "kwok-tuned": "#98df8a",
    "vk": "#d62728",
    "vk-qps": "#ff9896",
}


def load(directory):
    with open(os.path.join(directory, "run.json")) as f:
        run = json.load(f)
    results = {}
    for path in sorted(glob.glob(os.path.join(directory, "raw", "*.json"))):
        with open(path) as f:
            r = json.load(f)
        key = (r["scenario"], r["meta"]["contender"])
        results.setdefault(key, []).append(r)
    return run, results


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=1):
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    return f"{v:,.{digits}f}"


def spread(values, digits=1):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return fmt(values[0], digits)
    return f"{fmt(statistics.median(values), digits)} ({fmt(min(values), digits)}–{fmt(max(values), digits)})"


def contenders(results, scenario):
    present = {c for (s, c) in results if s == scenario}
    return [c for c in ORDER if c in present]


def user_totals(r, window):
    a = r.get("audit", {}).get(window)
    if not a:
        return None
    return a["by_user"].get(USERS[r["meta"]["contender"]])


def usage(r, proc, window, field):
    return r["processes"].get(proc, {}).get("usage", {}).get(window, {}).get(field)


def median_rep(rs):
    """The repetition with the median throughput (for CDF and RSS plots)."""
    ordered = sorted(rs, key=lambda r: r["running"]["pods_per_s"])
    return ordered[(len(ordered) - 1) // 2]


def throughput_table(results, scenario, lines):
    cs = contenders(results, scenario)
    if not cs:
        return
    lines.append(
        "| contender | reps | all Running | pods/s | PodStartupLatency p50 ms | p90 ms | p99 ms | max ms "
        "| delete s | writes/pod "
        "| contender CPU s | apiserver CPU s | peak RSS MiB |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c in cs:
        rs = results[(scenario, c)]
        ok = sum(1 for r in rs if r["running"]["all_running"])
        writes = []
        for r in rs:
            t = user_totals(r, "run")
            if t is not None:
                writes.append(t["other"] / r["count"])
        lines.append(
            f"| {NAMES[c]} | {len(rs)} | {ok}/{len(rs)} "
            f"| {spread([r['running']['pods_per_s'] for r in rs])} "
            f"| {spread([r['running']['latency_ms']['p50'] for r in rs], 0)} "
            f"| {spread([r['running']['latency_ms']['p90'] for r in rs], 0)} "
            f"| {spread([r['running']['latency_ms']['p99'] for r in rs], 0)} "
            f"| {spread([r['running']['latency_ms']['max'] for r in rs], 0)} "
            f"| {spread([(r.get('delete') or {}).get('seconds') for r in rs], 2)} "
            f"| {spread(writes, 2)} "
            f"| {spread([usage(r, 'contender', 'to_running', 'cpu_s') for r in rs], 2)} "
            f"| {spread([usage(r, 'apiserver', 'to_running', 'cpu_s') for r in rs], 2)} "
            f"| {spread([usage(r, 'contender', 'run', 'peak_rss_mib') for r in rs])} |"
        )
    lines.append("")
    lines.append(
        "CPU seconds are those spent from the first create until all pods were Running (the `to_running` window); "
        "writes/pod counts every non-lease request of the contender over the whole run."
    )
    lines.append("")


def steady_table(results, lines):
    cs = contenders(results, "steady")
    if not cs:
        return
    lines.append(
        "| contender | all Running | peak RSS MiB (hold) | peak RSS MiB (run) | CPU s (to Running) "
        "| CPU s (hold) | req/s (hold) | lease req/s (hold) | non-lease req/s (hold) | non-lease req/s (settled) "
        "| delete s | apiserver CPU s (hold) |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c in cs:
        rs = results[("steady", c)]

        def u(r, proc, window, field):
            return r["processes"].get(proc, {}).get("usage", {}).get(window, {}).get(field)

        def req(r, field, window="hold"):
            t = user_totals(r, window)
            a = r.get("audit", {}).get(window)
            if t is None or not a:
                return None
            return t[field] / a["seconds"]

        lines.append(
            f"| {NAMES[c]} | {sum(1 for r in rs if r['running']['all_running'])}/{len(rs)} "
            f"| {spread([u(r, 'contender', 'hold', 'peak_rss_mib') for r in rs])} "
            f"| {spread([u(r, 'contender', 'run', 'peak_rss_mib') for r in rs])} "
            f"| {spread([u(r, 'contender', 'to_running', 'cpu_s') for r in rs], 2)} "
            f"| {spread([u(r, 'contender', 'hold', 'cpu_s') for r in rs], 2)} "
            f"| {spread([req(r, 'total') for r in rs], 3)} "
            f"| {spread([req(r, 'leases') for r in rs], 3)} "
            f"| {spread([req(r, 'other') for r in rs], 3)} "
            f"| {spread([req(r, 'other', 'settled') for r in rs], 3)} "
            f"| {spread([(r.get('delete') or {}).get('seconds') for r in rs], 2)} "
            f"| {spread([u(r, 'apiserver', 'hold', 'cpu_s') for r in rs], 2)} |"
        )
    lines.append("")


def requests_table(results, lines):
    """What each contender asked of the apiserver while holding its pods."""
    cs = contenders(results, "steady")
    rows = []
    for c in cs:
        r = median_rep(results[("steady", c)])
        a = r.get("audit", {}).get("hold")
        if not a:
            continue
        for row in a["rows"]:
            if row["user"] == USERS[c]:
                ua = row["user_agent"] or "(none)"
                if len(ua) > 60:
                    ua = ua[:57] + "..."
                rows.append(
                    f"| {NAMES[c]} | `{ua}` | {row['verb']} | {row['resource']} | {row.get('code', '')} "
                    f"| {row['count']} | {row['per_s']:.3f} |"
                )
    if rows:
        lines.append("| contender | user agent | verb | resource | code | requests | per s |")
        lines.append("|---|---|---|---|---|---|---|")
        lines.extend(rows)
        lines.append("")


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def scenario_med(results, scenario, c, f):
    rs = results.get((scenario, c))
    return med([f(r) for r in rs]) if rs else None


def pods_per_s(r):
    return r["running"]["pods_per_s"]


def p99_of(r):
    return r["running"]["latency_ms"]["p99"]


def run_rss(r):
    return r["processes"].get("contender", {}).get("usage", {}).get("run", {}).get("peak_rss_mib")


def held_rss(r):
    """RSS at the end of the hold: what the contender keeps once settled."""
    samples = r["processes"].get("contender", {}).get("samples", [])
    hold = next((w for w in r["windows"] if w["name"] == "hold"), None)
    if not samples or not hold:
        return None
    t0 = r["started_unix"]
    inside = [s[1] for s in samples if hold["from"] <= s[0] + t0 <= hold["to"]]
    return inside[-1] if inside else None


def others_pods_per_s(r, down):
    """pods/s of the nodes other than `down`, together: their pods Running
    over the time until the last of them was Running."""
    nodes = {n: v for n, v in r.get("nodes", {}).items() if n != down}
    if not nodes:
        return None
    running = sum(v["running"] for v in nodes.values())
    span = max(v["seconds"] for v in nodes.values())
    return running / span if span else None


def targets(results, lines):
    rows = []

    def checked(what, value, target, met, shown=None):
        """A row measured against its target: met(value) says whether it holds."""
        ok = None if value is None else met(value)
        verdict = "–" if ok is None else ("met" if ok else "**missed**")
        return (what, fmt(value, 2) if shown is None else shown, target, verdict)

    for scenario, label in (("burst", "(a)"), ("steady", "(c)")):
        sk = scenario_med(results, scenario, "skylet", pods_per_s)
        ce = scenario_med(results, scenario, "ceiling", pods_per_s)
        if sk is None:
            continue
        n = results[(scenario, "skylet")][0]["count"]
        rows.append(
            checked(f"{label} {n} pods: skylet / ceiling, pods/s", ratio(sk, ce), "≥ 0.95", lambda v: v >= 0.95)
        )
        p_sk = scenario_med(results, scenario, "skylet", p99_of)
        p_ce = scenario_med(results, scenario, "ceiling", p99_of)
        what = f"{label} {n} pods: PodStartupLatency p99, skylet / ceiling"
        shown = None if p_sk is None or p_ce is None else f"{ratio(p_sk, p_ce):.2f} ({p_sk:.0f} / {p_ce:.0f} ms)"
        rows.append(checked(what, ratio(p_sk, p_ce), "≤ 1.2", lambda v: v <= 1.2, shown))
        for peer in PEERS:
            v = scenario_med(results, scenario, peer, pods_per_s)
            if v is not None:
                rows.append((f"{label} skylet / {NAMES[peer]}, pods/s", fmt(ratio(sk, v), 2), "", ""))
    if ("steady", "skylet") in results:
        n = results[("steady", "skylet")][0]["count"]
        peak = scenario_med(results, "steady", "skylet", run_rss)
        rows.append(
            checked(f"(c) {n} pods: skylet peak RSS", peak, "≤ 100 MiB", lambda v: v <= 100, f"{fmt(peak)} MiB")
        )
        held = scenario_med(results, "steady", "skylet", held_rss)
        kwok = scenario_med(results, "steady", "kwok", held_rss)
        if kwok is not None:
            what = f"(c) {n} pods: RSS held at the end of the hold, skylet / kwok"
            shown = None if held is None else f"{ratio(held, kwok):.2f} ({held:.1f} / {kwok:.1f} MiB)"
            rows.append(checked(what, ratio(held, kwok), "< 1", lambda v: v < 1, shown))
        other = []
        for r in results[("steady", "skylet")]:
            t = user_totals(r, "settled")
            a = r.get("audit", {}).get("settled")
            if t is not None and a:
                other.append(t["other"] / a["seconds"])
        if other:
            v = med(other)
            what = "(c) skylet apiserver requests beyond leases (settled hold)"
            rows.append(checked(what, v, "≤ 0.1/s", lambda v: v <= 0.1, f"{v:.3f}/s"))
    f3 = scenario_med(results, "burst", "fleet3", pods_per_s)
    ce = scenario_med(results, "burst", "ceiling", pods_per_s)
    if f3 is not None:
        n = results[("burst", "fleet3")][0]["count"]
        what = f"(e) {n} pods over 3 backends of one skylet / ceiling, pods/s"
        rows.append(checked(what, ratio(f3, ce), "≥ 0.8", lambda v: v >= 0.8))
    down = results.get(("burst", "fleet3-down"))
    if down and ("burst", "fleet3") in results:
        node = (down[0].get("outage") or {}).get("node")
        with_down = med([others_pods_per_s(r, node) for r in down])
        without = med([others_pods_per_s(r, node) for r in results[("burst", "fleet3")]])
        what = "(e) the other backends' pods/s with one backend down mid-burst / without"
        shown = (
            None
            if with_down is None or without is None
            else f"{ratio(with_down, without):.2f} ({with_down:.1f} / {without:.1f})"
        )
        rows.append(checked(what, ratio(with_down, without), "≥ 0.9", lambda v: v >= 0.9, shown))
    f4 = scenario_med(results, "steady", "fleet4", pods_per_s)
    if f4 is not None:
        n = results[("steady", "fleet4")][0]["count"]
        ce = scenario_med(results, "steady", "ceiling", pods_per_s)
        rows.append((f"(f) {n} pods over 4 backends of one skylet / ceiling, pods/s", fmt(ratio(f4, ce), 2), "", ""))
        sk = scenario_med(results, "steady", "skylet", pods_per_s)
        rows.append((f"(f) {n} pods over 4 backends / over 1, pods/s", fmt(ratio(f4, sk), 2), "", ""))
        peak = scenario_med(results, "steady", "fleet4", run_rss)
        rows.append(
            checked(
                f"(f) {n} pods over 4 backends: peak RSS", peak, "≤ 100 MiB", lambda v: v <= 100, f"{fmt(peak)} MiB"
            )
        )
    lines.append("| what | measured | target | |")
    lines.append("|---|---|---|---|")
    for row in rows:
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")


def fleet_table(results, lines):
    """Each backend's pods of the fleet runs."""
    rows = []
    for scenario in ("burst", "steady"):
        for c in FLEETS:
            for rep, r in enumerate(results.get((scenario, c), []), 1):
                down = (r.get("outage") or {}).get("node")
                for node, v in sorted(r.get("nodes", {}).items()):
                    note = " (taken down)" if node == down else ""
                    rows.append(
                        f"| {scenario} | {NAMES[c]} | {rep} | {node}{note} | {v['running']}/{v['pods']} "
                        f"| {fmt(v['pods_per_s'])} | {fmt(v['latency_ms']['p50'], 0)} | {fmt(v['latency_ms']['p99'], 0)} |"
                    )
    if rows:
        lines.append("| scenario | contender | rep | backend (node) | Running | pods/s | p50 ms | p99 ms |")
        lines.append("|---|---|---|---|---|---|---|---|")
        lines.extend(rows)
        lines.append("")


def plot_throughput(results, path):
    scenarios = [s for s in ("burst", "deployment") if contenders(results, s)]
    if not scenarios:
        return False
    fig, axes = plt.subplots(1, len(scenarios), figsize=(6 * len(scenarios), 4), squeeze=False)
    for ax, s in zip(axes[0], scenarios):
        cs = contenders(results, s)
        vals = [[r["running"]["pods_per_s"] for r in results[(s, c)]] for c in cs]
        mids = [statistics.median(v) for v in vals]
        lo = [m - min(v) for m, v in zip(mids, vals)]
        hi = [max(v) - m for m, v in zip(mids, vals)]
        ax.bar([NAMES[c] for c in cs], mids, yerr=[lo, hi], capsize=4, color=[COLORS[c] for c in cs])
        n = results[(s, cs[0])][0]["count"]
        ax.set_title(f"{s}: {n} pods, creation → all Running")
        ax.set_ylabel("pods/s (median, min–max over reps)")
        ax.tick_params(axis="x", rotation=30)
        for i, m in enumerate(mids):
            ax.annotate(f"{m:.0f}", (i, m), ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_cdf(results, path):
    scenarios = [s for s in ("burst", "deployment", "steady") if contenders(results, s)]
    if not scenarios:
        return False
    fig, axes = plt.subplots(1, len(scenarios), figsize=(6 * len(scenarios), 4), squeeze=False)
    for ax, s in zip(axes[0], scenarios):
        for c in contenders(results, s):
            lat = sorted(v for r in results[(s, c)] for v in r["latencies_ms"])
            if not lat:
                continue
            ys = [(i + 1) / len(lat) for i in range(len(lat))]
            ax.plot([max(v, 1.0) for v in lat], ys, label=NAMES[c], color=COLORS[c])
        n = results[(s, contenders(results, s)[0])][0]["count"]
        ax.set_xscale("log")
        ax.set_xlabel("creation → Running, ms (log; all reps)")
        ax.set_ylabel("fraction of pods")
        ax.set_title(f"{s}: {n} pods")
        ax.axhline(0.99, color="#cccccc", linewidth=0.8, linestyle="--")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_rss(results, path):
    cs = contenders(results, "steady")
    if not cs:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for c in cs:
        r = median_rep(results[("steady", c)])
        samples = r["processes"].get("contender", {}).get("samples", [])
        if not samples:
            continue
        t0 = samples[0][0]
        axes[0].plot([s[0] - t0 for s in samples], [s[1] for s in samples], label=NAMES[c], color=COLORS[c])
        axes[1].plot(
            [s[0] - t0 for s in samples], [s[2] - samples[0][2] for s in samples], label=NAMES[c], color=COLORS[c]
        )
    n = results[("steady", cs[0])][0]["count"]
    axes[0].set_title(f"steady: RSS of the contender, {n} pods")
    axes[0].set_xlabel("s since the run started")
    axes[0].set_ylabel("RSS, MiB")
    axes[1].set_title("CPU time of the contender")
    axes[1].set_xlabel("s since the run started")
    axes[1].set_ylabel("CPU s (user + system)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--docs", default="docs/bench")
    ap.add_argument("--markdown", default="BENCHMARKS.md")
    args = ap.parse_args()
    run, results = load(args.dir)
    if not results:
        sys.exit(f"no results in {args.dir}/raw")
    os.makedirs(args.docs, exist_ok=True)

    lines = [BEGIN, ""]
    lines.append(f"Run of `{run.get('command', 'hack/bench full')}`, {run.get('started')} to {run.get('finished')}.")
    for more in run.get("more_commands", []):
        lines.append(f"Then, into the same directory: `{more}`.")
    lines.append("")
    lines.append(
        f"Machine: {run.get('cpu')}, {run.get('cores')} cores, {run.get('memory')}, Linux {run.get('kernel')}; "
        f"skylet at {run.get('skylet_rev')}"
        + (f" with {run['skylet_dirty_files']} uncommitted files" if run.get("skylet_dirty_files") else "")
        + f". Load before: `{run.get('uptime_before', '').strip()}`; after: `{run.get('uptime_after', '').strip()}`."
    )
    if run.get("note"):
        lines.append("")
        lines.append(f"Conditions: {run['note']}")
    if run.get("failures"):
        lines.append("")
        lines.append(
            f"**{run['failures']} runs did not complete** (not all pods Running or gone in time); see the tables."
        )
    lines.append("")
    lines.append("Cells are the median over repetitions, with (min–max) when there were several.")
    lines.append("")
    plots = []
    if plot_throughput(results, os.path.join(args.docs, "throughput.png")):
        plots.append(("Throughput", "throughput.png"))
    if plot_cdf(results, os.path.join(args.docs, "latency-cdf.png")):
        plots.append(("Latency CDF", "latency-cdf.png"))
    if plot_rss(results, os.path.join(args.docs, "rss.png")):
        plots.append(("RSS and CPU over time (steady)", "rss.png"))

    if contenders(results, "burst"):
        n = results[("burst", contenders(results, "burst")[0])][0]["count"]
        lines.append(f"### (a) Burst: {n} pods with nodeName preset")
        lines.append("")
        throughput_table(results, "burst", lines)
    if contenders(results, "deployment"):
        n = results[("deployment", contenders(results, "deployment")[0])][0]["count"]
        lines.append(f"### (b) Through the scheduler: a Deployment of {n} replicas")
        lines.append("")
        throughput_table(results, "deployment", lines)
    if any(k[1] in FLEETS for k in results):
        lines.append("### (e) A fleet: several backends in one skylet, per backend")
        lines.append("")
        lines.append(
            "The fleet rows of the tables above are the whole process; here each backend's pods "
            "(pod i on backend i mod n). In `fleet3-down`, the third backend stops answering once a tenth "
            'of all pods are Running; its pods are left out of the run\'s "all Running".'
        )
        lines.append("")
        fleet_table(results, lines)
    if contenders(results, "steady"):
        r0 = results[("steady", contenders(results, "steady")[0])][0]
        hold = next((w for w in r0["windows"] if w["name"] == "hold"), None)
        secs = f", held {hold['to'] - hold['from']:.0f} s" if hold else ""
        lines.append(f"### (c) Steady: {r0['count']} pods{secs}")
        lines.append("")
        steady_table(results, lines)
        lines.append("Requests of each contender's user while holding (median repetition), from the audit log:")
        lines.append("")
        requests_table(results, lines)
    lines.append("### (d) Delete everything")
    lines.append("")
    lines.append("The `delete s` columns above: from the delete call (a DeleteCollection of the pods, or the")
    lines.append("Deployment's deletion in the background) until the watch has seen every pod gone.")
    lines.append("")
    lines.append("### Ratios and targets")
    lines.append("")
    targets(results, lines)
    lines.append("### Plots")
    lines.append("")
    for title, name in plots:
        lines.append(f"![{title}]({args.docs}/{name})")
        lines.append("")
    lines.append(END)
    block = "\n".join(lines)

    text = f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if os.path.exists(args.markdown):
        with open(args.markdown) as f:
            text = f.read()
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(args.markdown, "w") as f:
        f.write(head + block + tail)
    print(f"wrote {args.markdown} and {', '.join(n for _, n in plots)} in {args.docs}")


if __name__ == "__main__":
    main()
