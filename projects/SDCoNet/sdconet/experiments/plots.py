"""Training curves of several runs in one PNG: training loss per iteration and AP / AP50 per evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

from .results import RunResult

__all__ = ["plot_curves", "smooth"]


def smooth(points: Sequence[Tuple[int, float]], window: int) -> List[Tuple[int, float]]:
    """Running median over ``window`` consecutive points (the loss of one batch is noisy)."""
    if window <= 1 or len(points) <= 2:
        return list(points)
    import statistics

    out = []
    for i in range(len(points)):
        lo, hi = max(0, i - window // 2), min(len(points), i + window // 2 + 1)
        out.append((points[i][0], statistics.median(v for _, v in points[lo:hi])))
    return out


def plot_curves(results: Sequence[RunResult], path: Path, *, title: str = "") -> Path:
    """Write a 3-panel PNG: total training loss (running median) vs epoch, COCO AP and AP50 vs epoch at every
    evaluation. The SR stage switch of the first SR run is a dashed line. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    cmap = plt.get_cmap("tab10")
    switch_drawn = False
    for i, r in enumerate(results):
        color = cmap(i % 10)
        ipe = r.schedule.get("iters_per_epoch") or 0
        to_x = (lambda it, ipe=ipe: it / ipe) if ipe and ipe > 0 else (lambda it: it)
        name = f"{r.label} (seed {r.seed})"
        raw = r.curves.get("loss", [])
        loss = smooth(raw, max(1, min(25, len(raw) // 10)))
        if loss:
            axes[0].plot([to_x(it) for it, _ in loss], [v for _, v in loss], color=color, lw=1.2, label=name)
        evals = r.curves.get("evals", [])
        for ax, key in ((axes[1], "AP"), (axes[2], "AP50")):
            # a periodic evaluation is logged at the iteration that just ran (it + 1 done), the final one at MAX_ITER
            max_iter = r.schedule.get("max_iter") or 0
            pts = [
                (to_x(it + 1 if it < max_iter else it), m.get(key))
                for it, m in evals
                if m.get(key) is not None
            ]
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", color=color, label=name)
        s = r.schedule
        if not switch_drawn and s.get("has_sr") and s.get("sr_start_iter", -1) >= 0:
            for ax in axes:
                ax.axvline(to_x(s["sr_start_iter"]), color="grey", ls="--", lw=0.8)
            axes[0].text(to_x(s["sr_start_iter"]), 1.0, " SR on", transform=axes[0].get_xaxis_transform(),
                         va="top", fontsize=8, color="grey")  # fmt: skip
            switch_drawn = True
    unit = "epoch" if any(r.schedule.get("iters_per_epoch", 0) > 0 for r in results) else "iteration"
    axes[0].set(title="training loss (running median)", xlabel=unit, ylabel="total_loss")
    axes[1].set(title="COCO AP at each evaluation", xlabel=unit, ylabel="AP (%)")
    axes[2].set(title="COCO AP50 at each evaluation", xlabel=unit, ylabel="AP50 (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=9, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95 if title else 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
