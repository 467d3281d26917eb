"""Learning curves of fine-tuning: every seed's per-epoch metrics as a table and a plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import pandas as pd

from jsqa.io import atomic_path

Curves = dict[str, list[dict[str, float]]]


def curves_table(curves: Curves) -> pd.DataFrame:
    """Per-epoch metrics of every seed as one long table (seed, epoch, train_loss, val_*)."""
    df = pd.DataFrame([{"seed": int(s), **m} for s, hist in curves.items() for m in hist])
    if not df.empty:
        df["epoch"] = df["epoch"].astype(int)
    return df


def curves_plot(curves: Curves, path: str | Path, title: str, best: dict[str, float] | None = None) -> None:
    """Validation RMSE and PCC against epoch, one line per seed (PNG, atomic); a dot marks
    each seed's best epoch when ``best`` ({seed: epoch}) is given."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for s, hist in curves.items():
        epochs = [m["epoch"] for m in hist]
        for ax, key in zip(axes, ("val_rmse", "val_pcc")):
            (line,) = ax.plot(epochs, [m[key] for m in hist], lw=1.2, label=f"seed {s}")
            if best and s in best:
                e = best[s]
                ax.plot([e], [next(m[key] for m in hist if m["epoch"] == e)], "o", color=line.get_color(), ms=4)
    axes[0].set(xlabel="epoch", ylabel="validation RMSE", title=f"{title}: RMSE")
    axes[1].set(xlabel="epoch", ylabel="validation PCC", title=f"{title}: PCC")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
