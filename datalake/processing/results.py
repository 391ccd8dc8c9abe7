"""Saving a merged result: a pickle (what coffea users do with accumulators), a PNG for a 1-D histogram, and a
compact table of it for the terminal."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any


def is_hist1d(result: Any) -> bool:
    return hasattr(result, "axes") and hasattr(result, "values") and len(getattr(result, "axes", ())) == 1


def save(result: Any, out: str | os.PathLike) -> list[Path]:
    """``OUT.pkl`` always; ``OUT.png`` when the result is a 1-D histogram. Written whole or not at all."""
    base = Path(out)
    base = base.with_suffix("") if base.suffix in (".pkl", ".png") else base
    base.parent.mkdir(parents=True, exist_ok=True)
    written = [base.with_name(base.name + ".pkl")]
    part = written[0].with_name(written[0].name + ".part")
    with open(part, "wb") as handle:
        pickle.dump(result, handle)
    part.replace(written[0])
    if is_hist1d(result):
        written.append(plot(result, base.with_name(base.name + ".png")))
    return written


def plot(h: Any, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    axis = h.axes[0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.stairs(h.values(), axis.edges, fill=False, linewidth=1.5)
    ax.set_xlabel(axis.label or axis.name)
    ax.set_ylabel(f"entries / {axis.widths[0]:g}" if len(axis.widths) else "entries")
    ax.set_yscale("log" if h.values().max() > 100 * max(h.values().min(), 1) else "linear")
    ax.set_xlim(axis.edges[0], axis.edges[-1])
    outside = _outside(h)
    if outside:  # entries beyond the axis are not folded into its edge bins: the plot says how many there are
        ax.text(0.99, 0.98, outside, transform=ax.transAxes, ha="right", va="top", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _outside(h: Any) -> str:
    """'N below LOW, M above HIGH (not drawn)' for a histogram with entries in its under/overflow bins."""
    axis = h.axes[0]
    flow = h.values(flow=True)
    under = float(flow[0]) if axis.traits.underflow else 0.0
    over = float(flow[-1]) if axis.traits.overflow else 0.0
    beyond = ((under, "below", axis.edges[0]), (over, "above", axis.edges[-1]))
    parts = [f"{n:,.0f} {side} {edge:g}" for n, side, edge in beyond if n]
    return f"{', '.join(parts)} (not drawn)" if parts else ""


def rows(h: Any, at_most: int = 24) -> list[tuple[float, float, float]]:
    """(low edge, high edge, count) of a 1-D histogram, adjacent bins summed to at most ``at_most`` rows."""
    edges, values = list(h.axes[0].edges), list(h.values())
    group = -(-len(values) // at_most)
    out = []
    for i in range(0, len(values), group):
        out.append((float(edges[i]), float(edges[min(i + group, len(values))]), float(sum(values[i : i + group]))))
    return out


def peak(h: Any) -> float:
    """Centre of the fullest bin."""
    values = h.values()
    return float(h.axes[0].centers[values.argmax()])
