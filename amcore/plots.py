"""Figures people look at rather than read: marginals, trajectories, velocity field, loss curve."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _project(x: np.ndarray) -> np.ndarray:
    return x[:, :2] if x.shape[1] >= 2 else np.column_stack([x[:, 0], np.zeros(len(x))])


def marginals(path: Path, truth: list[np.ndarray], predicted: list[np.ndarray], times, title: str) -> None:
    """One panel per observed time: observed samples against samples pushed from the first time."""
    n = len(times)
    cols = min(n, 6)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False, sharex=True, sharey=True)
    for ax, t, xt, xp in zip(axes.flat, times, truth, predicted, strict=False):
        a, b = _project(xt), _project(xp)
        ax.scatter(a[:, 0], a[:, 1], s=2, alpha=0.3, c="tab:blue", label="observed", rasterized=True)
        ax.scatter(b[:, 0], b[:, 1], s=2, alpha=0.3, c="tab:orange", label="predicted", rasterized=True)
        ax.set_title(f"t = {t:.3g}", fontsize=9)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(markerscale=5, fontsize=7, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def trajectories(path: Path, traj: np.ndarray, truth: list[np.ndarray], title: str, n_paths: int = 200) -> None:
    """Particle paths over all observed samples coloured by time."""
    fig, ax = plt.subplots(figsize=(6, 5))
    cmap = plt.get_cmap("viridis")
    for k, xt in enumerate(truth):
        a = _project(xt)
        ax.scatter(a[:, 0], a[:, 1], s=1, alpha=0.15, color=cmap(k / max(1, len(truth) - 1)), rasterized=True)
    idx = np.linspace(0, traj.shape[1] - 1, min(n_paths, traj.shape[1])).astype(int)
    for i in idx:
        p = _project(traj[:, i])
        ax.plot(p[:, 0], p[:, 1], lw=0.6, color="black", alpha=0.5)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def loss_curve(path: Path, steps: np.ndarray, loss: np.ndarray, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def metric_by_time(path: Path, times, series: dict[str, list[float]], ylabel: str, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, values in series.items():
        ax.plot(times, values, marker="o", ms=3, label=name)
    ax.set_xlabel("t")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
