"""The soak's resident memory, descriptors and pods over time (hack/soak).

Input: samples.csv (secs,lane,replica,pid,rss_mib,fds,pods,running), one
line per replica process and sample. One line per process: a killed
replica's restart is a new process, so each line is one process's life.
"""

import csv
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(samples: str, out: str) -> None:
    rss = defaultdict(list)
    fds = defaultdict(list)
    pods = defaultdict(dict)
    with open(samples, newline="") as f:
        for row in csv.DictReader(f):
            t = float(row["secs"]) / 60
            key = f"{row['lane']} pid {row['pid']}"
            rss[key].append((t, float(row["rss_mib"])))
            fds[key].append((t, int(row["fds"])))
            pods[row["lane"]][t] = int(row["pods"])
    fig, axes = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
    for ax, series, label in ((axes[0], rss, "RSS (MiB)"), (axes[1], fds, "open fds")):
        for key, points in sorted(series.items()):
            xs, ys = zip(*points)
            ax.plot(xs, ys, linewidth=1)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_title("each replica process (a killed leader restarts as a new process)")
    for lane, points in sorted(pods.items()):
        xs = sorted(points)
        axes[2].plot(xs, [points[x] for x in xs], label=lane)
    axes[2].set_ylabel("pods")
    axes[2].set_xlabel("minutes")
    axes[2].legend()
    axes[2].grid(alpha=0.3)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=90)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
