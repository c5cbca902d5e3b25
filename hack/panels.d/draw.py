"""One PNG per panel of skylet's dashboard, from Prometheus range queries.

Input: the JSON tests/monitoring.rs writes (each panel's title, expression,
legend format and the series Prometheus returned). Names the test made
unique (the fleet's prefix, its namespaces) are shortened for the reader.
"""

import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def legend(fmt: str, metric: dict[str, str], names: dict[str, str]) -> str:
    def label(m: re.Match[str]) -> str:
        value = metric.get(m.group(1).strip(), "")
        return names.get(value, value)

    return re.sub(r"\{\{\s*([a-zA-Z_]+)\s*\}\}", label, fmt) if fmt else str(metric)


def short_names(doc: dict) -> dict[str, str]:
    """Readable names for the test's unique ones."""
    names: dict[str, str] = {}
    prefix = doc["fleet"] + "-"
    for panel in doc["panels"]:
        for s in panel["series"]:
            for v in s["metric"].values():
                if v.startswith(prefix):
                    rest = v[len(prefix) :]
                    names[v] = f"backend-{rest}" if len(rest) == 1 else rest
    names.update(doc.get("namespaces", {}))
    return names


def main() -> None:
    doc = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    names = short_names(doc)
    # panels with several targets come as one entry per target: merge them
    merged: dict[str, dict] = {}
    for p in doc["panels"]:
        m = merged.setdefault(p["title"], {**p, "series": []})
        for s in p["series"]:
            m["series"].append({**s, "legend": p["legend"]})
    for p in merged.values():
        print(draw(p, names, out))


def draw(panel: dict, names: dict[str, str], out: Path) -> Path:
    """The panel's series, each with the legend format of its own target."""
    fig, ax = plt.subplots(figsize=(7.5, 3.2), dpi=100)
    start = panel["start"]
    series = sorted(panel["series"], key=lambda s: legend(s["legend"], s["metric"], names))
    # series at 0 all along (phases no pod is in) only crowd the legend
    nonzero = [s for s in series if any(float(v) != 0 for _, v in s["values"])]
    series = nonzero or series
    for s in series:
        xs = [float(t) - start for t, _ in s["values"]]
        ys = [float(v) for _, v in s["values"]]
        ax.step(xs, ys, where="post", label=legend(s["legend"], s["metric"], names))
    ax.set_title(panel["title"], loc="left", fontsize=11)
    ax.set_xlabel("seconds into the test workload", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    path = out / f"{slug(panel['title'])}.png"
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
