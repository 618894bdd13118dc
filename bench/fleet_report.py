"""The table and the plot of ``python -m bench.fleet`` (rows as ``bench.fleet`` makes them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def render(rows: list[dict[str, Any]], head: str) -> str:
    cols = [
        ("store", "store", "{}"), ("nodes", "nodes", "{:,}"), ("jobs", "jobs placed", "{:,}"),
        ("alone_1000", "scheduler alone: placements/s, pages <= 1,000", "{:,.0f}"),
        ("alone_s", "scheduler alone: placements/s, pages up to the room", "{:,.0f}"),
        ("placements_s", "placements/s (lease -> last placed)", "{:,.0f}"),
        ("fill_s", "placements/s until every slot is taken", "{:,.0f}"),
        ("e2e_jobs_s", "jobs/s end to end (claimed + finished)", "{:,.0f}"),
        ("cycle_p50_ms", "cycle p50, ms", "{:.1f}"), ("cycle_p99_ms", "cycle p99, ms", "{:.1f}"),
        ("hb_cpu_pct", "store CPU on heartbeats alone, % of a core", "{:.1f}"),
        ("hb_ops_s", "store ops/s on heartbeats alone", "{:,.0f}"),
        ("expired", "noop jobs whose lease ran out before their report", "{}"),
        ("killed", "nodes stopped at once", "{}"), ("killed_jobs", "jobs they held", "{}"),
        ("detect_s", "stop -> seen dead (polled), s", "{:.2f}"),
        ("replace_s", "stop -> all their jobs started elsewhere, s", "{:.2f}"),
        ("replace_hb_s", "last heartbeat -> all started elsewhere, s", "{:.2f}"),
        ("false_dead", "nodes declared dead that were not stopped", "{}"),
    ]  # fmt: skip
    out = [head, "", "| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        if "error" in row:
            out.append(f"| {row['store']} | {row['nodes']:,} | FAILED: {row['error']} |")
            continue
        cells = (f.format(row[k]) if k in row else "-" for k, _, f in cols)  # "-": not run
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: Path, failure_timeout: float) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for kind in sorted({r["store"] for r in rows}):
        ok = [r for r in rows if r["store"] == kind and "error" not in r]
        xs = [r["nodes"] for r in ok]
        line = axes[0].plot(xs, [r["placements_s"] for r in ok], "o-", label=f"{kind}: fleet")
        axes[0].plot(xs, [r["alone_s"] for r in ok], "s--", color=line[0].get_color(),
                     label=f"{kind}: scheduler alone")  # fmt: skip
        axes[1].plot(xs, [r["cycle_p99_ms"] for r in ok], "o-", label=kind)
        axes[2].plot(xs, [r["hb_cpu_pct"] for r in ok], "o-", label=kind)
        color = line[0].get_color()
        axes[3].plot(
            xs, [r["replace_s"] for r in ok], "o-", color=color, label=f"{kind}: from stop"
        )
        axes[3].plot(xs, [r["replace_hb_s"] for r in ok], "s--", color=color,
                     label=f"{kind}: from last beat")  # fmt: skip
    titles = ("placements/s", "scheduler cycle p99, ms", "store CPU on heartbeats, % core",
              "stopped -> re-placed, s")  # fmt: skip
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("nodes")
        ax.set_title(title)
    axes[0].set_yscale("log")
    axes[0].axhline(20000, color="grey", ls="--", label="target")
    axes[2].axhline(10, color="grey", ls="--", label="target")
    axes[3].axhline(failure_timeout + 1, color="grey", ls="--", label="target")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True
