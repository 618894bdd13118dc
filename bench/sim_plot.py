"""The figure of ``python -m bench.sim --plot FILE.png`` (needs ``rota[bench]``: matplotlib)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else math.nan


def plot(results: dict[str, list[Any]], path: Path) -> None:
    """Per workload and policy: utilisation (share of the bound), Jain's index, p99 wait."""
    workloads = list(results)
    policies = [r.policy for r in results[workloads[0]]]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    width = 0.8 / len(policies)
    panels = [
        ("utilisation / bound", lambda r: r.util / r.bound if r.bound else math.nan),
        ("Jain's index (fair-share weighted)", lambda r: r.jain),
        ("p99 wait, all jobs (s, log)", lambda r: _p99(list(r.waits.values()))),
    ]
    for ax, (title, value) in zip(axes, panels, strict=True):
        for k, name in enumerate(policies):
            xs = [i + (k - (len(policies) - 1) / 2) * width for i in range(len(workloads))]
            ys = [value(results[wl][k]) for wl in workloads]
            ax.bar(xs, ys, width, label=name)
        ax.set_xticks(range(len(workloads)), workloads)
        ax.set_title(title)
        if "log" in title:
            ax.set_yscale("log")
    axes[0].set_ylim(0.5, 1.02)
    axes[1].set_ylim(0.3, 1.02)
    axes[0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
