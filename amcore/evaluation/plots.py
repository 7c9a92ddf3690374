"""Figures people look at rather than read: marginals, trajectories, velocity field, loss curve."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from amcore.atomic import replacing  # noqa: E402


def _save(fig, path: Path, dpi: int) -> None:
    """PNG outputs of rules appear whole or not at all, like every other output."""
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)


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
    _save(fig, path, dpi=110)


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
    _save(fig, path, dpi=110)


def loss_curve(path: Path, steps: np.ndarray, loss: np.ndarray, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path, dpi=110)


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
    _save(fig, path, dpi=110)


def holdout_bars(path: Path, summary: dict[str, dict[str, np.ndarray]], ylabel: str) -> None:
    """Bars per held-out time (and their mean), one per method, with the spread over seeds."""
    groups = list(dict.fromkeys(h for cols in summary.values() for h in cols))
    width = 0.8 / max(1, len(summary))
    fig, ax = plt.subplots(figsize=(1.2 + 1.6 * len(groups), 3.8))
    for i, (method, cols) in enumerate(summary.items()):
        pos = [g for g, h in enumerate(groups) if h in cols]
        values = [cols[groups[g]] for g in pos]
        means = [v.mean() for v in values]
        errs = [v.std(ddof=1) if len(v) > 1 else 0.0 for v in values]
        x = np.array(pos) + (i - (len(summary) - 1) / 2) * width
        ax.bar(x, means, width, yerr=errs, capsize=2, label=method)
        for xi, m in zip(x, means, strict=True):
            if not np.isfinite(m):  # a failed prediction (NaN cells) has no bar: say so where it would stand
                ax.text(xi, 0.5, "failed", rotation=90, ha="center", va="center", transform=ax.get_xaxis_transform())
    ax.set_xticks(range(len(groups)), [h if h == "mean" else f"t = {h}" for h in groups])
    lows = [m for cols in summary.values() for v in cols.values() if np.isfinite(m := v.mean())]
    if lows:
        ax.set_ylim(0.9 * min(lows), 1.04 * max(lows))
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncols=2)
    fig.tight_layout()
    _save(fig, path, dpi=110)


def holdout_panels(path: Path, panels: list[dict], n_points: int = 1000) -> None:
    """Observed vs predicted cells at each held-out time (columns) for each method (rows), first two axes.

    Weighted predictions (displacement interpolation, uAM) are drawn by resampling ``n_points`` by weight.
    """
    methods = list(dict.fromkeys(p["method"] for p in panels))
    holdouts = list(dict.fromkeys(p["holdout"] for p in panels))
    fig, axes = plt.subplots(
        len(methods), len(holdouts), figsize=(2.8 * len(holdouts), 2.6 * len(methods)), squeeze=False,
        sharex="col", sharey="col",
    )  # fmt: skip
    rng = np.random.default_rng(0)
    for p in panels:
        ax = axes[methods.index(p["method"]), holdouts.index(p["holdout"])]
        a = _project(p["observed"])
        ax.scatter(a[:, 0], a[:, 1], s=2, alpha=0.3, c="tab:blue", label="held-out cells", rasterized=True)
        finite = np.isfinite(p["predicted"]).all(1) & np.isfinite(p["weight"])
        title = f"{p['method']}, t = {p['holdout']}"
        if finite.any():
            weight = p["weight"][finite]
            b = _project(p["predicted"][finite][rng.choice(finite.sum(), n_points, p=weight / weight.sum())])
            ax.scatter(b[:, 0], b[:, 1], s=2, alpha=0.3, c="tab:orange", label="predicted", rasterized=True)
        if not finite.all():
            title += f": FAILED ({(~finite).sum()} NaN/inf cells)"
        ax.set_title(title, fontsize=8)
    axes.flat[0].legend(markerscale=5, fontsize=7, loc="best")
    fig.tight_layout()
    _save(fig, path, dpi=100)


def velocity_field(path: Path, learned, truth, times, x: np.ndarray, title: str, potential=None) -> None:
    """Arrows of the learned field (and, in grey, the true one when known) at three times.

    A grid over the first two dimensions of ``x``, other coordinates at their mean; ``learned(points, t)``
    and ``truth(points, t)`` return vectors whose first two components are drawn. ``potential(points, t)``
    (AM's ``s``) is drawn as filled contours beneath: the arrows climb it.
    """
    picks = [times[0], times[len(times) // 2], times[-1]]
    lo, hi = x.min(axis=0), x.max(axis=0)
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 15), np.linspace(lo[1], hi[1], 15))
    grid = np.tile(x.mean(axis=0), (gx.size, 1)).astype(np.float64)
    grid[:, 0], grid[:, 1] = gx.ravel(), gy.ravel()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharex=True, sharey=True)
    for ax, t in zip(axes, picks, strict=True):
        v = learned(grid, t)
        if potential is not None:
            levels = ax.contourf(gx, gy, potential(grid, t).reshape(gx.shape), levels=14, cmap="Greys", alpha=0.5)
            fig.colorbar(levels, ax=ax, shrink=0.8, label="potential s")
        # One arrow scale for learned and true: the longest learned arrow spans one grid cell.
        arrows = {
            "scale_units": "xy",
            "angles": "xy",
            "scale": np.linalg.norm(v[:, :2], axis=1).max() / (gx[0, 1] - gx[0, 0]),
        }
        if truth is not None:
            u = truth(grid, t)
            ax.quiver(grid[:, 0], grid[:, 1], u[:, 0], u[:, 1], color="0.6", label="true", **arrows)
        ax.quiver(grid[:, 0], grid[:, 1], v[:, 0], v[:, 1], color="tab:red", alpha=0.8, label="learned", **arrows)
        ax.set_title(f"t = {t:.3g}", fontsize=9)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path, dpi=110)


def action_audit(path: Path, audit: dict, title: str) -> None:
    """Bars per observed interval: the learned flow's kinetic action, the W2 geodesic's (the least any flow through
    the snapshots spends) and, with a simulator, the true process's."""
    series = {"learned flow": audit["action_flow"], "W2 geodesic (lower bound)": audit["action_geodesic"]}
    if "action_truth" in audit:
        series["true process"] = audit["action_truth"]
    intervals = list(audit["action_flow"])
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(intervals) * len(series)), 3.6))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        ax.bar(np.arange(len(intervals)) + (i - (len(series) - 1) / 2) * width, list(values.values()), width,
               label=name)  # fmt: skip
    ax.set_xticks(np.arange(len(intervals)), intervals, rotation=45 if len(intervals) > 8 else 0)
    ax.set_xlabel("observed interval")
    ax.set_ylabel("∫ E|v|² dt")
    ax.set_title(f"{title} (flow / geodesic = {audit['action_ratio']:.3g})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path, dpi=110)


def projections(
    path: Path, truth: list[np.ndarray], predicted: list[np.ndarray], times, title: str, n_points: int = 1500
) -> None:
    """Observed against pushed cells in three 2-d projections (rows: x0-x1, x0-x2, x1-x2; fewer for fewer dimensions)
    at up to six evenly spaced observed times (columns): the AM paper's figure for its 3-d hydrogen atom."""
    dim = truth[0].shape[1]
    pairs = [(i, j) for i, j in ((0, 1), (0, 2), (1, 2)) if j < dim] or [(0, None)]
    picks = np.unique(np.linspace(0, len(times) - 1, min(6, len(times))).round().astype(int))
    fig, axes = plt.subplots(len(pairs), len(picks), figsize=(2.5 * len(picks), 2.5 * len(pairs)), squeeze=False,
                             sharex="row", sharey="row")  # fmt: skip
    rng = np.random.default_rng(0)

    def thin(x: np.ndarray) -> np.ndarray:
        x = x[np.isfinite(x).all(1)]
        return x[rng.choice(len(x), n_points, replace=False)] if len(x) > n_points else x

    for col, k in enumerate(picks):
        a, b = thin(np.asarray(truth[k])), thin(np.asarray(predicted[k]))
        for row, (i, j) in enumerate(pairs):
            ax = axes[row, col]
            for x, color, label in ((a, "tab:blue", "observed"), (b, "tab:orange", "pushed")):
                ax.scatter(x[:, i], np.zeros(len(x)) if j is None else x[:, j], s=1.5, alpha=0.3, c=color,
                           label=label, rasterized=True)  # fmt: skip
            if row == 0:
                ax.set_title(f"t = {times[k]:.3g}", fontsize=9)
            if col == 0:
                ax.set_ylabel(f"x{j}" if j is not None else "", fontsize=8)
            ax.set_xlabel(f"x{i}", fontsize=8)
    axes[0, 0].legend(markerscale=5, fontsize=7, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path, dpi=100)


def distances_over_time(path: Path, series: dict[str, dict[str, float]], title: str) -> None:
    """One panel per distance (each on its own scale), its value at each scored time: e.g. amcore's ``mmd`` beside the
    paper's ``mmd_paper``. ``series`` maps a name to ``{"<t>": value}`` as metrics.json holds them."""
    fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.3), squeeze=False)
    for ax, (name, values) in zip(axes[0], series.items(), strict=True):
        ts = [float(t) for t in values]
        ax.plot(ts, list(values.values()), marker="o", ms=3)
        ax.axhline(0.0, color="0.6", lw=0.6)
        ax.set_xlabel("t")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path, dpi=110)
