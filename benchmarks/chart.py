"""Draw the req/s bar chart of a `make bench` result file: `chart.py RESULTS.json OUT.png`.

Run with the benchmark venv's Python (it has matplotlib); the runner does this.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def draw(results: dict, out: Path) -> None:
    """Grouped bars of median req/s: one group per scenario, one bar per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["loads"] if r["rps"] is not None]
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    servers = list(dict.fromkeys(r["server"] for r in rows))
    colors = {s: plt.get_cmap("tab10")(i) for i, s in enumerate(servers)}
    width = 0.8 / max(len(servers), 1)
    fig, ax = plt.subplots(figsize=(10, 5))
    labelled: set[str] = set()
    for j, scenario in enumerate(scenarios):
        # Only the servers that ran this scenario, centred on its tick.
        here = [r for r in rows if r["scenario"] == scenario]
        for k, r in enumerate(here):
            x = j + (k - (len(here) - 1) / 2) * width
            label = None if r["server"] in labelled else r["server"]
            labelled.add(r["server"])
            ax.bar(x, r["rps"], width, color=colors[r["server"]], label=label)
            text = "FAILED" if r["failed"] else f"{r['rps']:,.0f}"
            ax.annotate(
                text,
                (x, r["rps"]),
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90,
                xytext=(0, 2),
                textcoords="offset points",
            )
    ax.set_xticks(range(len(scenarios)), scenarios)
    # Scenarios differ by orders of magnitude (iris vs a 200-tree forest).
    ax.set_yscale("log")
    ax.set_ylabel("requests/s (median, log scale)")
    ax.set_title("modelport vs MLServer: REST and gRPC req/s, server on 1 core, load on the other")
    ax.legend(fontsize=8)
    ax.margins(y=0.25)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    draw(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
