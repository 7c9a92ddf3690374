"""Figures people look at rather than read: marginals, trajectories, velocity field, loss curve."""

from __future__ import annotations

import textwrap
import zlib
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from amcore.atomic import replacing  # noqa: E402
from amcore.data.times import uneven_times  # noqa: E402


def _save(fig, path: Path, dpi: int) -> None:
    """PNG outputs of rules appear whole or not at all, like every other output."""
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)


MAX_POINTS = 2000  # points per scatter panel: a panel of 10^6 cells is a blot, and slow to draw and to save
MAX_PATHS = 200  # particle paths in a trajectories plot


def shown_features(box: np.ndarray, count: int = 2) -> tuple[int, ...]:
    """The features the plots draw: the first ``count`` whose observed range (``box``, ``(2, features)``: lowest and
    highest value of each) is not a point; the first feature when none varies. A constant feature (a gene no cell
    expresses, a column of ones) drawn as an axis puts every panel's cells on one line; with one feature that
    varies, the plots are those of 1-d data."""
    varying = tuple(int(i) for i in np.flatnonzero(box[1] > box[0]))
    return varying[:count] or (0,)


# The plots draw the data's own first features while those hold at least this share of the spread the best plane
# holds (the top two principal axes of the training cells); below it, the principal axes (audit 28: two of 30
# standardised genes held 0.3 % of a million cells' motion, and copying the previous time looked as good as AM).
VIEW_SHARE = 0.9
VIEW_CORE = 0.99  # the share of the cells, nearest the median, whose spread chooses the view's axes


@dataclass(frozen=True)
class View:
    """The coordinates the plots draw: the data's own features (``basis`` None), or the principal axes of the
    training cells, ``(x - center) @ basis`` with orthonormal ``basis`` columns, when the first features hold
    little of the cells' spread. Linear: fields turn with the cells. ``shares``: each axis's share of the spread;
    ``held``: the share of the top two axes' spread that the data's first two varying features (``features``)
    hold."""

    center: np.ndarray | None = None
    basis: np.ndarray | None = None
    shares: np.ndarray | None = None
    held: float = 1.0
    features: tuple[int, ...] = ()

    @property
    def turned(self) -> bool:
        return self.basis is not None

    def turn(self, x) -> np.ndarray:
        """Cells (rows; any leading axes) in the view's coordinates."""
        x = np.asarray(x)
        return x if self.basis is None else (x.astype(np.float64) - self.center) @ self.basis

    def back(self, y: np.ndarray) -> np.ndarray:
        """Points in the view's coordinates as cells of the data."""
        return y if self.basis is None else self.center + np.asarray(y, dtype=np.float64) @ self.basis.T

    def cells(self, x):
        """``x`` (numpy or lazy) read in the view's coordinates: only the rows asked for are read and turned."""
        return x if self.basis is None else _Turned(x, self)

    def field(self, f):
        """A vector field ``f(cells, t)`` of the data, taken at and drawn in the view's coordinates."""
        return f if self.basis is None else lambda y, t: np.asarray(f(self.back(y), t), dtype=np.float64) @ self.basis

    def scalar(self, f):
        """A scalar field ``f(cells, t)`` of the data, taken at the view's coordinates."""
        return f if self.basis is None else lambda y, t: f(self.back(y), t)

    def names(self, names: list[str] | None) -> list[str] | None:
        """The axes' names: the features' own, or each principal axis with its share of the spread."""
        if self.basis is None:
            return names
        return [f"principal axis {i + 1} ({share:.0%})" for i, share in enumerate(self.shares)]

    def box(self, truth: list, data_box: np.ndarray) -> np.ndarray:
        """``(2, dim)``: each drawn coordinate's lowest and highest value: the data's box (:func:`evaluate.data_box`)
        on its own features; turned, that of the first :data:`FRAME_SAMPLE` cells of each time (the data's box
        bounds features, not their combinations)."""
        if self.basis is None:
            return data_box
        cells = np.concatenate([self.turn(xt[:FRAME_SAMPLE]) for xt in truth])
        cells = cells[np.isfinite(cells).all(axis=1)]
        return np.stack([cells.min(axis=0), cells.max(axis=0)])


class _Turned:
    """A (lazy) array of cells read in a view's coordinates, rows read as they are asked for."""

    def __init__(self, x, view: View) -> None:
        self.x, self.view, self.shape = x, view, tuple(x.shape)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, key) -> np.ndarray:
        return self.view.turn(self.x[key])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:  # all rows at once, as a slice turns them
        turned = self.view.turn(self.x)
        return turned if dtype is None else turned.astype(dtype)

    def mean(self, axis: int = 0) -> np.ndarray:
        return self.view.turn(np.asarray(self.x.mean(axis=axis)))


def choose_view(training: list, box: np.ndarray) -> View:
    """The plots' view of data whose training times' cells are ``training`` (numpy or lazy; the first
    :data:`FRAME_SAMPLE` of each are read: rows are in random order within a time), ``box`` the data's
    (:func:`evaluate.data_box`): its own first two varying features where they hold :data:`VIEW_SHARE` of the
    spread the top two principal axes hold, and always with three features or fewer (a simulator's axes, a
    hand-picked plane); else the principal axes of the pooled cells (the motion between times included)."""
    dim = box.shape[1]
    if dim <= 3:
        return View()
    by_time = [np.asarray(xt[:FRAME_SAMPLE], dtype=np.float64) for xt in training]
    cells = np.concatenate(by_time)
    cells = cells[np.isfinite(cells).all(axis=1)]
    # The cells nearest the median choose the axes: a few far ones turned them (12 of 15,000 cells 60 units out
    # took the first axis 67 degrees off the motion; Student-t cells with 1.5 degrees of freedom, 78 degrees).
    if len(cells):
        far = np.linalg.norm(cells - np.median(cells, axis=0), axis=1)
        cells = cells[far <= np.quantile(far, VIEW_CORE)]
    if len(cells) < 3:
        return View()
    center = cells.mean(axis=0)
    spread, axes = np.linalg.eigh(np.cov(cells - center, rowvar=False))
    spread, axes = np.clip(spread[::-1], 0.0, None), axes[:, ::-1]
    shown = shown_features(box)
    best = float(spread[:2].sum())
    held = float(np.var(cells[:, list(shown)], axis=0, ddof=1).sum() / best) if best > 0 else 1.0
    if held >= VIEW_SHARE:
        return View(held=held, features=shown)
    # Each axis points the way the population moves from the first training time to the last (time runs left to
    # right); an axis across the motion by its largest component.
    along = (np.nanmedian(by_time[-1], axis=0) - np.nanmedian(by_time[0], axis=0)) @ axes
    largest = axes[np.abs(axes).argmax(axis=0), np.arange(dim)]
    axes *= np.where(np.abs(along) > 1e-9 * np.sqrt(spread.sum()), np.sign(along), np.sign(largest))
    return View(center, axes, spread / spread.sum(), held, shown)


def training_view(snaps, box: np.ndarray) -> View:
    """:func:`choose_view` of a store's training times (its held-out times never choose the view)."""
    kept = snaps.training_snapshots()
    return choose_view([snaps.snapshot(k) for k in kept], box)


def view_note(view: View, names: list[str] | None) -> str:
    """What a turned view draws, for the log: its axes' share of the spread and what the first features held."""
    shown = "features " + " and ".join(axis_labels(names, view.features, len(view.shares))[:-1])
    return (
        f"the plots draw the training cells' first two principal axes ({view.shares[:2].sum():.0%} of their "
        f"spread); {shown} hold {view.held:.0%} of what those hold"
    )


# The plots' frame holds this share of the observed cells in each feature (read on at most FRAME_SAMPLE a time),
# widened by FRAME_MARGIN of its span on each side: a few far cells set the axes otherwise (audit 21: one outlier at
# 17 put clouds spanning -2 to 7 in a corner, and the velocity grid's 15 arrows a side mostly over empty space).
FRAME_SHARE, FRAME_SAMPLE, FRAME_MARGIN = 0.999, 5000, 0.1


def frame(truth: list, box: np.ndarray) -> np.ndarray:
    """``(2, features)``: the plots' lowest and highest value of each feature, the central :data:`FRAME_SHARE` of
    the observed cells (the first :data:`FRAME_SAMPLE` of each time: rows are in random order within a time)
    widened by :data:`FRAME_MARGIN`, within ``box`` (every observed cell's range, :func:`evaluate.data_box`)."""
    cells = np.concatenate([np.asarray(xt[:FRAME_SAMPLE], dtype=np.float64) for xt in truth])
    tail = (1 - FRAME_SHARE) / 2
    low, high = np.quantile(cells, [tail, 1 - tail], axis=0)
    span = high - low
    low, high = np.maximum(low - FRAME_MARGIN * span, box[0]), np.minimum(high + FRAME_MARGIN * span, box[1])
    flat = span <= 0  # a feature most cells hold at one value: its whole range
    return np.stack([np.where(flat, box[0], low), np.where(flat, box[1], high)])


def _outside(points: np.ndarray, frame: np.ndarray | None, shown: tuple[int, ...]) -> int:
    """How many of ``points`` (already projected on ``shown``) fall outside ``frame``."""
    if frame is None or not len(points):
        return 0
    low, high = frame[0][list(shown)], frame[1][list(shown)]
    return int(((points < low) | (points > high)).any(axis=1).sum())


def _hold(ax, frame: np.ndarray | None, shown: tuple[int, ...]) -> None:
    """Set ``ax``'s limits to ``frame`` on the ``shown`` features (two of them)."""
    if frame is not None and len(shown) >= 2:
        ax.set_xlim(frame[0][shown[0]], frame[1][shown[0]])
        ax.set_ylim(frame[0][shown[1]], frame[1][shown[1]])


def _fit(title: str, fig) -> str:
    """``title`` in lines that fit ``fig``'s width, at a suptitle's size (audit 47: mmd.png's cut the model's name
    off at both edges; audit 68: marginals.png's second line, at both edges too)."""
    width = max(30, int(fig.get_figwidth() * 9))
    return "\n".join(textwrap.fill(line, width=width) for line in title.split("\n"))  # each of its own lines


def _held(t, held_out=()) -> bool:
    """Whether observed time ``t`` is one of the ``held_out`` (to float rounding): never trained on."""
    return any(np.isclose(float(t), float(h), rtol=1e-9, atol=0.0) for h in held_out)


def _time_labels(times) -> list[str]:
    """Each time in as few significant digits (3 at least) as tell every one of ``times`` apart (audit 58: years 1990,
    1991 and 1993 all read 1.99e+03)."""
    times = [float(t) for t in np.ravel(times)]
    for digits in range(3, 17):
        labels = [f"{t:.{digits}g}" for t in times]
        if len(set(labels)) == len(set(times)):
            break
    return labels


def _time_title(t, held_out=(), times=()) -> str:
    """``t = 0.3``, told apart from the other ``times``, marked where the time was held out (audit 47: only
    marginals.png said so)."""
    every = [float(v) for v in times] or [float(t)]
    label = _time_labels([float(t), *every])[0]
    return f"t = {label}" + (" (held out)" if _held(t, held_out) else "")


def _project(x: np.ndarray, shown: tuple[int, ...] = (0, 1)) -> np.ndarray:
    """The two drawn features of each row (a 1-d row: its feature against 0)."""
    x = np.asarray(x)
    return x[:, list(shown)] if len(shown) >= 2 else np.column_stack([x[:, shown[0]], np.zeros(len(x))])


def _subsample(x, n: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``n`` rows of ``x`` (numpy or lazy), a seeded uniform subsample in their order, as numpy."""
    if len(x) > n:
        x = x[np.sort(rng.choice(len(x), n, replace=False))]
    return np.asarray(x)


def _by_weight(x, weight, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` rows of ``x`` drawn with replacement by ``weight`` (uAM's particles, displacement interpolation's):
    the weighted cloud as it is, not where its particles happen to sit (audit 8: dying particles of 4.5 % of the mass
    filled half of uAM's panels). Infinite weights hold all the mass, shared evenly; weights of NaN or below zero
    none; rows with a NaN or inf are left out. ``x`` may be lazy: only the rows drawn are read. Without weights:
    ``_subsample``."""
    if weight is None:
        x = _subsample(x, n, rng)
    else:
        weight = np.asarray(weight, dtype=np.float64)
        if not len(weight):
            return np.empty((0, x.shape[1]))
        weight = np.isposinf(weight) if np.isposinf(weight).any() else np.where(weight > 0, weight, 0.0)  # NaN: 0
        top = weight.max()
        draw = None if top <= 0 else (weight / top) / (weight / top).sum()  # over the largest: a sum never overflows
        rows, again = np.unique(rng.choice(len(weight), n, p=draw), return_inverse=True)
        x = np.asarray(x[rows])[again]
    return x[np.isfinite(x).all(axis=1)]


def _grid(n: int) -> tuple[int, int, float]:
    """Columns, rows and panel size (inches) for ``n`` panels: up to 6 a row, 8 beyond 12 panels, smaller; the rows
    as even as they go (audit 59: seven panels left one alone under six)."""
    rows = -(-n // (6 if n <= 12 else 8))
    return -(-n // rows), rows, 2.6 if n <= 12 else 1.9


def axis_labels(names: list[str] | None, shown: tuple[int, ...], dim: int) -> list[str]:
    """The drawn features' names (``x0, x1, ...`` where the data named none); ``""`` for a 1-d plot's y axis."""
    names = list(names or [f"x{i}" for i in range(dim)])
    return [names[i] for i in shown] + [""]


def _name_axes(axes: np.ndarray, labels: list[str], n: int) -> None:
    """``labels`` under the lowest of the first ``n`` panels in each column (with its tick labels: on shared axes a
    panel above an empty slot had none, audit 26) and beside the first column of a grid of panels."""
    cols = axes.shape[1]
    for col in range(min(cols, n)):
        ax = axes[(n - 1 - col) // cols, col]
        ax.set_xlabel(labels[0], fontsize=8)
        ax.tick_params(labelbottom=True)
    for ax in axes[:, 0]:
        ax.set_ylabel(labels[1], fontsize=8)


ACTION_LOG_SPREAD = 100.0  # largest over smallest bar of action.png above which its axis is logarithmic


def _time_colours(times):
    """A colour per time (viridis over the time range) and the mappable for a colorbar: a legend of 40 times is
    unreadable, a colorbar is not. Times spread unevenly (0, 0.05, 0.3, 2, 10) take colours by their order, the
    colorbar labelled with the times: on the range, the first three were one purple."""
    times = np.asarray(times, dtype=np.float64)
    if uneven_times(times):
        norm = matplotlib.colors.Normalize(vmin=0, vmax=len(times) - 1)
        mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap="viridis")
        rank = np.argsort(np.argsort(times))
        ticks = (np.arange(len(times)), _time_labels(np.sort(times)))
        return [mappable.to_rgba(r) for r in rank], mappable, ticks
    norm = matplotlib.colors.Normalize(vmin=times.min(), vmax=max(times.max(), times.min() + 1e-12))
    mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap="viridis")
    return [mappable.to_rgba(t) for t in times], mappable, None


def _time_axis(ax, times, label: str = "t"):
    """Where on ``ax``'s x axis each time goes (a function of times): at the time itself, or, where the observed
    ``times`` are spread unevenly (as for :func:`_time_colours`), on their clock, equal steps from one to the next,
    each tick labelled with its time (audit 50: 0.1 to 4 hours took the first 2 % of an axis to 168 hours)."""
    observed = np.unique(np.asarray(times, dtype=np.float64))
    if not uneven_times(observed):
        ax.set_xlabel(label, fontsize=8)
        return lambda t: np.asarray(t, dtype=np.float64)
    ax.set_xticks(np.arange(len(observed)), _time_labels(observed), rotation=45 if len(observed) > 6 else 0,
                  fontsize=7)  # fmt: skip
    ax.set_xlabel(f"{label} (the observed times, evenly spaced)", fontsize=8)
    return lambda t: np.interp(np.asarray(t, dtype=np.float64), observed, np.arange(len(observed)))


def marginals(
    path: Path, truth: list[np.ndarray], predicted: list[np.ndarray], times, title: str, max_points: int = MAX_POINTS,
    seed: int = 0, axis_names: list[str] | None = None, weights: list[np.ndarray] | None = None,
    shown: tuple[int, ...] = (0, 1), frame: np.ndarray | None = None, held_out=(),
) -> None:  # fmt: skip
    """One panel per observed time (``held_out`` ones titled so: never trained on): observed samples against samples
    pushed from the first time; each panel draws
    at most ``max_points`` (half observed, half predicted, seeded subsamples; weighted particles, ``weights``, drawn
    by weight); panels wrap, at most 6 or 8 a row, the rows even. The axes are the ``shown`` features
    (:func:`shown_features`;
    ``axis_names``: every feature's name, e.g. PC1, PC2, ...), over ``frame`` (:func:`frame`) where given, the
    title counting the drawn points beyond it; with one feature, each panel is the two clouds' histograms on one
    set of bins (points on a line hide where they pile up)."""
    rng = np.random.default_rng(seed)
    shown = shown[: truth[0].shape[1]]  # 1-d: one feature
    n = len(times)
    cols, rows, size = _grid(n)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + 0.6), squeeze=False, sharex=True,
                             sharey=True)  # fmt: skip
    beyond = np.zeros(2, dtype=int)  # observed, pushed points drawn outside the frame
    for k, (ax, t, xt, xp) in enumerate(zip(axes.flat, times, truth, predicted, strict=False)):
        a = _project(_subsample(xt, max_points // 2, rng), shown)
        b = _project(_by_weight(xp, None if weights is None else weights[k], max_points // 2, rng), shown)
        out = [_outside(a, frame, shown), _outside(b, frame, shown)] if len(shown) >= 2 else [0, 0]
        beyond += out
        if len(shown) < 2:
            _histograms(ax, a[:, 0], b[:, 0], "pushed")
        else:
            ax.scatter(a[:, 0], a[:, 1], s=2, alpha=0.3, c="tab:blue", label="observed", rasterized=True)
            ax.scatter(b[:, 0], b[:, 1], s=2, alpha=0.3, c="tab:orange", label="pushed", rasterized=True)
        # each panel counts its own pushed points off the frame (audit 47: one total hid 35 % of one time's)
        spill = f"\n{out[1]}/{len(b)} pushed off the frame" if out[1] else ""
        ax.set_title(_time_title(t, held_out, times) + spill, fontsize=7 if spill else 9 if n <= 12 else 8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    labels = axis_labels(axis_names, shown, truth[0].shape[1])
    _name_axes(axes, labels if len(shown) >= 2 else [labels[0], "density"], n)
    axes.flat[0].legend(markerscale=5, fontsize=7, loc="best")
    _hold(axes.flat[0], frame, shown)  # the axes are shared
    if beyond.any():
        title += (f"\n{beyond[0]} observed and {beyond[1]} pushed points drawn lie beyond the frame (the central "
                  f"{FRAME_SHARE:.1%} of the observed cells, within their range; each panel counts its "
                  "own)")  # fmt: skip
    fig.suptitle(_fit(title, fig))
    fig.tight_layout()
    _save(fig, path, dpi=110 if n <= 12 else 90)


def _histograms(ax: plt.Axes, observed: np.ndarray, predicted: np.ndarray, label: str = "predicted") -> None:
    """One feature's observed and predicted (``label``) cells as densities on shared bins."""
    both = np.concatenate([observed, predicted])
    bins = np.histogram_bin_edges(both, bins=40) if len(both) else 10
    ax.hist(observed, bins=bins, density=True, alpha=0.5, color="tab:blue", label="observed")
    ax.hist(predicted, bins=bins, density=True, histtype="step", lw=1.2, color="tab:orange", label=label)


def trajectories(
    path: Path, traj, truth: list[np.ndarray], title: str, n_paths: int = MAX_PATHS, times=None,
    max_points: int = MAX_POINTS, seed: int = 0, shown: tuple[int, ...] = (0, 1), axis_names: list[str] | None = None,
    path_times=None, frame: np.ndarray | None = None, held_out=(),
) -> None:  # fmt: skip
    """Paths of a seeded subsample of at most ``n_paths`` particles of ``traj(step, particle, feature)`` (numpy, or
    lazy: only those particles are read) over at most ``max_points`` observed cells coloured by time (``times``,
    the observed times; their index when None), with a colorbar; the ``shown`` features (``axis_names``: every
    feature's name), over ``frame`` (:func:`frame`) where given, the title counting the paths that leave it. One
    feature: position against time (``path_times``, each step's; spread evenly over the observed times when
    None)."""
    rng = np.random.default_rng(seed)
    by_index = times is None
    label = "observed time (index)" if by_index else "t (observed cells)"
    times = np.arange(len(truth), dtype=np.float64) if times is None else np.asarray(times, dtype=np.float64)
    colours, mappable, ticks = _time_colours(times)
    fig, ax = plt.subplots(figsize=(6.6, 5))
    per_time = max(1, max_points // max(1, len(truth)))
    shown = shown[: truth[0].shape[1]]
    flat = len(shown) < 2
    for colour, t, xt in zip(colours, times, truth, strict=True):
        a = _project(_subsample(xt, per_time, rng), shown)
        if flat:  # one feature: the cells at their time, the paths through time
            a = np.column_stack([np.full(len(a), t), a[:, 0]])
        ax.scatter(a[:, 0], a[:, 1], s=4, alpha=0.6, color=colour, rasterized=True, linewidths=0, zorder=2)
    n = traj.shape[1]
    idx = np.sort(rng.choice(n, min(n_paths, n), replace=False))
    paths = np.asarray(traj[:, idx])
    steps = np.linspace(times[0], times[-1], len(paths)) if path_times is None else np.asarray(path_times)
    leaving = 0
    for i in range(paths.shape[1]):
        p = _project(paths[:, i], shown)
        leaving += not flat and _outside(p, frame, shown) > 0
        if flat:
            p = np.column_stack([steps, p[:, 0]])
        ax.plot(p[:, 0], p[:, 1], lw=0.5, color="black", alpha=0.3, zorder=1)
    labels = axis_labels(axis_names, shown, truth[0].shape[1])
    labels = ["observed time (index)" if by_index else "t", labels[0]] if flat else labels
    ax.set_xlabel(labels[0], fontsize=8)
    ax.set_ylabel(labels[1], fontsize=8)
    bar = fig.colorbar(mappable, ax=ax, label=label.replace(")", ", in order)") if ticks else label)
    if ticks:
        step = max(1, len(ticks[0]) // 12)  # at most about a dozen labels
        bar.set_ticks(ticks[0][::step], labels=ticks[1][::step])
    if not flat:
        _hold(ax, frame, shown)
    beyond = f"; {leaving} leave the frame ({FRAME_SHARE:.1%} of the observed cells)" if leaving else ""
    unseen = ", ".join(_time_labels([*held_out, *(() if times is None else times)])[: len(held_out)])
    unseen = f"\nheld out (drawn, never trained on): t = {unseen}" if unseen else ""
    ax.set_title(f"{title}\n{len(idx)} of {n} particles{beyond}{unseen}", fontsize=10)
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


def metric_by_time(path: Path, times, series: dict[str, list[float]], ylabel: str, title: str,
                   floor: list[float] | None = None, truth_floor: float | None = None) -> None:  # fmt: skip
    """Each method's ``series`` over the observed ``times``, beside the noise ``floor`` where given: W1 between two
    disjoint samples of the observed cells, under which no difference means anything (audit 26: a zoomed axis
    without it ranked methods 0.002 apart, a floor of 0.11 above them all); at most half the cells each, so above
    what a perfect prediction of more cells scores. ``truth_floor`` (simulated data): that perfect prediction's
    W1, from fresh samples of the true law, averaged over the times (audit 33: the models read 35 % under the
    halves' line, as if better than perfect)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    colours, styles = plt.get_cmap("tab20"), method_styles(list(series))  # a method's look in every figure
    at = _time_axis(ax, times)
    for name, values in series.items():
        ax.plot(at(times), values, marker=MARKERS[styles[name] % len(MARKERS)], ms=3, color=colours(styles[name]),
                label=name)  # fmt: skip
    if floor is not None:
        ax.plot(at(times), floor, color="0.5", ls="--", lw=1, label="W1 between two halves of the observed cells")
        ax.set_ylim(bottom=0)
    if truth_floor is not None and np.isfinite(truth_floor):
        ax.axhline(truth_floor, color="0.3", ls=":", lw=1, label="a perfect prediction's W1 (true law, mean)")
        ax.set_ylim(bottom=0)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path, dpi=110)


MARKERS = "osD^vP<X>hp*"


def method_styles(methods: list[str], n: int = 20) -> dict[str, int]:
    """A style index in ``range(n)`` per method (its colour in tab20, its marker in :data:`MARKERS`) from its name
    (CRC32), the next free one where two names meet: a method keeps its look across datasets' figures (audit 19:
    torchcfm_ot took copy_prev's red triangle from one dataset to the next, by position)."""
    taken: dict[str, int] = {}
    for method in sorted(methods):
        index = zlib.crc32(method.encode()) % n
        while index in taken.values() and len(taken) < n:
            index = (index + 1) % n
        taken[method] = index
    return taken


def holdout_bars(
    path: Path,
    summary: dict[str, dict[str, np.ndarray]],
    ylabel: str,
    floor: dict[str, float] | None = None,
    pairs: dict[str, dict[str, tuple]] | None = None,
    reference: str = "am",
    more: list[tuple] = (),
    flagged: set[str] = frozenset(),
) -> None:
    """Per held-out time (and their mean) a dot per method with the spread over seeds; dots, not bars, as the axis
    starts near the best score, where differences of a few % show. Each method has its own colour and marker,
    chosen by its name (:func:`method_styles`): the same in every dataset's figure. With many held-out times the
    figure stops widening at 18 inches and the labels turn. ``floor`` (per group: the noise floor, what a perfect
    prediction scores) is drawn as a dashed line where it falls within the axis and written under the group where
    it falls below: how large those few % are. ``pairs`` (``table.paired_differences``) adds a panel beside: the
    reference minus each peer with its 95 % interval, the question the dots leave to the eye. ``more``: further
    rows, each ``(summary, ylabel, floor, pairs)`` of another distance (in many dimensions W1 of a few thousand
    cells is mostly sampling noise, and the sliced distance on all cells may rank the methods otherwise).
    ``flagged``: methods with a failed or flagged run, marked ⚑ in the legend (``table.marked_runs``)."""
    rows = [(summary, ylabel, floor, pairs), *more]
    groups = list(dict.fromkeys(h for row in rows for cols in row[0].values() for h in cols))
    many = len(groups) > 8
    wide = min(18.0, 2.6 + (0.5 + 0.25 * len(summary) if many else 1.6) * len(groups))  # 1.4 in for the legend
    sides = any(row[3] for row in rows)
    fig, axes = plt.subplots(len(rows), 2 if sides else 1, figsize=(wide + (4.2 if sides else 0), 3.8 * len(rows)),
                             squeeze=False, gridspec_kw={"width_ratios": [wide, 4.2]} if sides else None)  # fmt: skip
    for (values, label, level, paired), row_axes in zip(rows, axes, strict=True):
        _holdout_dots(row_axes[0], values, groups, label, level, flagged)
        if sides and paired:
            _paired_panel(row_axes[1], paired, reference, plt.get_cmap("tab20"), method_styles(list(values)))
        elif sides:
            row_axes[1].axis("off")
    fig.tight_layout()
    _save(fig, path, dpi=110)


def _holdout_dots(ax, summary: dict[str, dict[str, np.ndarray]], groups: list[str], ylabel: str,
                  floor: dict[str, float] | None, flagged: set[str] = frozenset()) -> None:  # fmt: skip
    """One row of :func:`holdout_bars`: the dots of each method at each group, the floor, the legend."""
    width = 0.8 / max(1, len(summary))
    many = len(groups) > 8
    colours, styles = plt.get_cmap("tab20"), method_styles(list(summary))
    for i, (method, cols) in enumerate(summary.items()):
        pos = [g for g, h in enumerate(groups) if h in cols]
        values = [cols[groups[g]] for g in pos]
        means = [v.mean() for v in values]
        errs = [v.std(ddof=1) if len(v) > 1 else 0.0 for v in values]
        x = np.array(pos) + (i - (len(summary) - 1) / 2) * width
        ax.errorbar(x, means, yerr=errs, fmt=MARKERS[styles[method] % len(MARKERS)], color=colours(styles[method]),
                    label=f"{method} ⚑ (flagged)" if method in flagged else method,
                    markersize=4 if many else 5, elinewidth=0.8, capsize=0 if many else 2)  # fmt: skip
        for xi, m in zip(x, means, strict=True):
            if not np.isfinite(m):  # a failed prediction (NaN cells) has no dot: say so where it would stand
                ax.text(xi, 0.5, "failed", rotation=90, ha="center", va="center", transform=ax.get_xaxis_transform())
    low, high = ax.get_ylim()
    labels = [h if h == "mean" else (h if many else f"t = {h}") for h in groups]
    lines = 0
    for g, h in enumerate(groups):
        level = (floor or {}).get(h)
        if level is None or not np.isfinite(level):
            continue
        if low <= level <= high:
            ax.hlines(level, g - 0.45, g + 0.45, colors="0.4", linestyles="dashed", lw=0.8)
            lines += 1
        else:  # off the axis: a line would flatten every difference; written under the group, over no dot
            labels[g] += f"\nfloor {level:.3g} (median)"
    ax.set_ylim(low, high)
    if lines:
        # each method's floor is drawn at its prediction's size: the line is their median (audit 68: whose?)
        ax.plot([], [], color="0.4", ls="dashed", lw=0.8, label="noise floor (median of the methods')")
    ax.set_xticks(range(len(groups)), labels, rotation=90 if many else 0, fontsize=8 if many else None)
    for g in range(1, len(groups)):
        ax.axvline(g - 0.5, color="0.85", lw=0.6)
    if many:
        ax.set_xlabel("held-out t")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)  # beside: never over a dot


def _paired_panel(ax, pairs: dict[str, dict[str, tuple]], reference: str, colours, styles: dict[str, int]) -> None:
    """The reference minus each peer, a row per peer: the mean over held-out times as a filled marker with its 95 %
    interval, each held-out time as a small open dot with its own; left of the zero line favours the reference.
    The axis spans three times the median end of the intervals: a peer far off (copying the previous time), or one
    of its times, is written at the edge with its value, not drawn to flatten the close calls, which are the
    question."""
    peers = list(pairs)
    ends = [abs(v) for p in peers for c in pairs[p].values() for v in c[:3] if np.isfinite(v)]
    limit = 3 * float(np.median(ends)) if ends and np.median(ends) > 0 else None
    for row, peer in enumerate(peers):
        times = [h for h in pairs[peer] if h != "mean"]
        spots = [(h, row - 0.15 + 0.3 * (j + 1) / (len(times) + 1)) for j, h in enumerate(times)]
        for h, y in [*spots, ("mean", row + 0.3)]:
            if h not in pairs[peer]:
                continue
            mean, low, high = pairs[peer][h][:3]
            main = h == "mean" or "mean" not in pairs[peer]  # the row's main point: its mean, or its one time
            look = {"fmt": MARKERS[styles[peer] % len(MARKERS)], "ms": 5, "capsize": 2} if main else {
                "fmt": "o", "ms": 3, "mfc": "none", "alpha": 0.6, "elinewidth": 0.6}  # fmt: skip
            spread = [[mean - low], [high - mean]] if np.isfinite(low) else None  # one seed: no interval
            ax.errorbar(mean, y, xerr=spread, color=colours(styles[peer]), **look)
            # Off the axis: written at its edge; a time of a row whose main point is on it too (audit 27: one
            # vanished), the others of a far row are its main point's company (their labels would pile up).
            far_row = limit is not None and abs(pairs[peer].get("mean", pairs[peer][h])[0]) > limit
            if limit is not None and abs(mean) > limit and (main or not far_row):
                value = f"{mean:+.3g}" + ("" if main else f" (t = {h})")
                label = f"◀ {value}" if mean < 0 else f"{value} ▶"
                ax.text(0.02 if mean < 0 else 0.98, y, label, ha="left" if mean < 0 else "right", va="center",
                        fontsize=7 if main else 6, color=colours(styles[peer]), alpha=1 if main else 0.7,
                        transform=ax.get_yaxis_transform())  # fmt: skip
    if limit is not None and max(ends) > limit:
        ax.set_xlim(-limit, limit)
    ax.axvline(0.0, color="0.3", lw=0.8)
    ax.set_yticks(range(len(peers)), peers, fontsize=7)
    ax.set_ylim(len(peers) - 0.4, -0.6)
    ax.set_xlabel(f"{reference} − peer, W1 (95 % interval); left of 0: {reference} better", fontsize=8)  # audit 61
    several = any("mean" in cols for cols in pairs.values())
    ax.set_title("filled: mean over held-out times; open: each time" if several else "the held-out time", fontsize=7)
    ax.grid(axis="x", alpha=0.3)


def holdout_panels(path: Path, panels: list[dict], n_points: int = MAX_POINTS // 2) -> None:
    """Observed vs predicted cells at each held-out time for each method (one row per method, a column per
    held-out time, wrapping after 6 into further blocks of rows), on each panel's ``shown`` features (named by its
    ``axes``; one feature: histograms); panels of one held-out time share their axes.

    Each panel draws at most ``n_points`` held-out cells (a seeded subsample) and ``n_points`` predicted ones
    (resampled by weight: displacement interpolation and uAM are weighted).
    """
    methods = list(dict.fromkeys(p["method"] for p in panels))
    holdouts = list(dict.fromkeys(p["holdout"] for p in panels))
    cols = min(len(holdouts), 6)
    blocks = -(-len(holdouts) // cols)
    fig, axes = plt.subplots(len(methods) * blocks, cols, figsize=(2.8 * cols, 2.6 * len(methods) * blocks),
                             squeeze=False)  # fmt: skip

    def axis(method: str, holdout) -> plt.Axes:
        h = holdouts.index(holdout)
        return axes[(h // cols) * len(methods) + methods.index(method), h % cols]

    for holdout in holdouts:  # one held-out time's panels share their axes
        first = axis(methods[0], holdout)
        for method in methods[1:]:
            axis(method, holdout).sharex(first)
            axis(method, holdout).sharey(first)
    used = set()
    rng = np.random.default_rng(0)
    for p in panels:
        ax = axis(p["method"], p["holdout"])
        used.add(ax)
        shown = p.get("shown", (0, 1)[: p["observed"].shape[1]])
        a = _project(_subsample(p["observed"], n_points, rng), shown)
        finite = np.isfinite(p["predicted"]).all(1) & np.isfinite(p["weight"])
        title = f"{p['method']}, t = {p['holdout']}"
        b = _project(_by_weight(p["predicted"][finite], p["weight"][finite], n_points, rng), shown)
        if len(shown) < 2:
            _histograms(ax, a[:, 0], b[:, 0])
        else:
            ax.scatter(a[:, 0], a[:, 1], s=2, alpha=0.3, c="tab:blue", label="held-out cells", rasterized=True)
            if len(b):
                ax.scatter(b[:, 0], b[:, 1], s=2, alpha=0.3, c="tab:orange", label="predicted", rasterized=True)
        if not finite.all():
            title += f": FAILED ({(~finite).sum()} NaN/inf cells)"
        ax.set_title(title, fontsize=8)
        names = p.get("axes", [f"x{i}" for i in shown])
        ax.set_xlabel(names[0], fontsize=7)
        ax.set_ylabel(names[1] if len(shown) >= 2 else "density", fontsize=7)
    for ax in axes.flat:
        if ax not in used:
            ax.axis("off")
    axes.flat[0].legend(markerscale=5, fontsize=7, loc="best")
    fig.tight_layout()
    _save(fig, path, dpi=100)


def _range(x, box: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Each feature's lowest and highest value: ``box``'s, else read from ``x``."""
    return (box[0], box[1]) if box is not None else (np.asarray(x.min(axis=0)), np.asarray(x.max(axis=0)))


def velocity_curves(
    path: Path, learned, truth, times, x: np.ndarray, title: str, field: str = "velocity", feature: int = 0,
    axis_names: list[str] | None = None, box: np.ndarray | None = None,
) -> None:  # fmt: skip
    """One feature that varies (1-d data, or the others constant): the learned field's component along it against
    position, one curve per observed time (coloured by time) over the observed range (``box``, lowest and highest
    value of each feature, where the caller has it: ``x`` may be a lazy store), other features at their mean, the
    true one dashed where it is known."""
    colours, mappable, ticks = _time_colours(times)
    low, high = _range(x, box)
    grid = np.tile(np.asarray(x.mean(axis=0), dtype=np.float64), (200, 1))
    grid[:, feature] = np.linspace(float(low[feature]), float(high[feature]), 200)
    fig, ax = plt.subplots(figsize=(6.6, 4))
    for colour, t in zip(colours, times, strict=True):
        ax.plot(grid[:, feature], np.asarray(learned(grid, float(t)))[:, feature], color=colour, lw=1.2)
        if truth is not None:
            ax.plot(grid[:, feature], np.asarray(truth(grid, float(t)))[:, feature], color=colour, lw=0.8,
                    ls="dashed")  # fmt: skip
    ax.axhline(0, color="0.7", lw=0.6)
    ax.set_xlabel(axis_labels(axis_names, (feature,), x.shape[1])[0])
    ax.set_ylabel(field + (" (dashed: true)" if truth is not None else ""))
    bar = fig.colorbar(mappable, ax=ax, label="t" + (" (in order)" if ticks else ""))
    if ticks:
        bar.set_ticks(ticks[0], labels=ticks[1])
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path, dpi=110)


def velocity_field(
    path: Path, learned, truth, times, x: np.ndarray, title: str, potential=None, shown: tuple[int, int] = (0, 1),
    axis_names: list[str] | None = None, box: np.ndarray | None = None, cells: list | None = None, held_out=(),
) -> None:  # fmt: skip
    """Arrows of the learned field (and, outlined in black, the true one when known) at three times, over that
    time's observed ``cells`` where given (one array per time: where the field was trained, and where the arrows
    are extrapolation; audit 47).

    A grid over the ``shown`` two dimensions of ``x`` over their range (``box``, as :func:`velocity_curves`;
    ``axis_names``: every feature's name), other coordinates at their mean; ``learned(points, t)`` and
    ``truth(points, t)`` return vectors whose ``shown`` components are drawn. ``potential(points, t)`` (AM's ``s``) is
    drawn as filled contours beneath: the arrows climb it.
    """
    i, j = shown
    picks = [times[0], times[len(times) // 2], times[-1]]
    lo, hi = _range(x, box)
    mean = np.asarray(x.mean(axis=0), dtype=np.float64)

    def plane(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The grid of ``xs`` by ``ys`` on the shown features, other coordinates at their mean, as points."""
        px, py = np.meshgrid(xs, ys)
        points = np.tile(mean, (px.size, 1))
        points[:, i], points[:, j] = px.ravel(), py.ravel()
        return px, py, points

    gx, gy, grid = plane(np.linspace(lo[i], hi[i], 15), np.linspace(lo[j], hi[j], 15))
    # a grid cell of margin: an arrow of the edge row, at most a cell long, stays in the frame (audit 33)
    cell_x, cell_y = gx[0, 1] - gx[0, 0], gy[1, 0] - gy[0, 0]
    limits = (gx.min() - cell_x, gx.max() + cell_x), (gy.min() - cell_y, gy.max() + cell_y)
    sx, sy, shaded = plane(np.linspace(*limits[0], 17), np.linspace(*limits[1], 17))  # the potential, to the edges
    labels = axis_labels(axis_names, shown, x.shape[1])
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharex=True, sharey=True)
    rng = np.random.default_rng(0)
    for ax, t in zip(axes, picks, strict=True):
        if cells is not None:
            seen = _project(_subsample(cells[list(times).index(t)], MAX_POINTS // 4, rng), shown)
            ax.scatter(seen[:, 0], seen[:, 1], s=2, alpha=0.35, c="tab:blue", rasterized=True, linewidths=0, zorder=1)
        v = np.asarray(learned(grid, t))[:, [i, j]]
        if potential is not None:
            levels = ax.contourf(sx, sy, potential(shaded, t).reshape(sx.shape), levels=14, cmap="Greys", alpha=0.5)
            fig.colorbar(levels, ax=ax, shrink=0.8, label="potential s")
        # One arrow scale for learned and true: the longest arrow of either spans one grid cell (by the learned
        # alone, a true field 9 times shorter vanished under it: audit 27).
        u = None if truth is None else np.asarray(truth(grid, t))[:, [i, j]]
        longest_any = max(np.linalg.norm(w, axis=1).max() for w in (v, u) if w is not None)
        # (the shorter of the two spacings: an arrow is as long along either axis, and the margin is a cell)
        arrows = {"scale_units": "xy", "angles": "xy", "scale": max(longest_any, 1e-300) / min(cell_x, cell_y)}
        drawn = ax.quiver(grid[:, i], grid[:, j], v[:, 0], v[:, 1], color="tab:red", alpha=0.8, label="learned",
                          zorder=2, **arrows)  # fmt: skip
        if u is not None:  # outlined over the learned ones: grey under them, they vanished where the two agree
            ax.quiver(grid[:, i], grid[:, j], u[:, 0], u[:, 1], facecolor="none", edgecolor="black", linewidth=0.6,
                      label="true", zorder=3, **arrows)  # fmt: skip
        longest = float(longest_any)  # each panel has its own scale: say it, one (shorter) grid cell long
        ax.quiverkey(drawn, 0.78, 1.03, longest, f"{longest:.2g} / unit time", labelpos="E", fontproperties={"size": 7})
        ax.set_title(_time_title(t, held_out, times), fontsize=9, loc="left")
        ax.set_xlabel(labels[0], fontsize=8)
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
    axes[0].set_ylabel(labels[1], fontsize=8)
    # Arrows as lines in the legend: quiver's own handle is a box, read as the potential's grey shading (audit 26);
    # beside the title, over no arrow (audit 33: inside a panel it hid a corner of the field)
    keys = [("true (outlined)", "black")] if truth is not None else []
    handles = [Line2D([], [], color=colour, lw=2, label=name) for name, colour in [*keys, ("learned", "tab:red")]]
    if cells is not None:
        handles.append(Line2D([], [], color="tab:blue", marker="o", ls="", ms=3, label="observed cells"))
    fig.legend(handles=handles, fontsize=7, loc="upper right", ncols=len(handles), frameon=False)
    fig.suptitle(_fit(title, fig))
    fig.tight_layout()
    _save(fig, path, dpi=110)


GROWTH_SCALE_SHARE = 0.99  # of the cells' absolute growth rates inside growth.png's colour scale


def growth(
    path: Path, times, observed_mass, predicted_mass, title: str, rate=None, truth: list[np.ndarray] | None = None,
    max_points: int = MAX_POINTS // 2, axis_names: list[str] | None = None, shown: tuple[int, ...] = (0, 1),
    held_out=(),
) -> None:  # fmt: skip
    """The mass over time, relative to the first time's: the observed (counts, or ``dataset.population``; at the
    ``held_out`` times an open circle: never trained on) beside the model's along its push, which a balanced
    objective holds at 1 whatever the data do. With uAM's ``rate``
    (``rate(cells, t)`` per unit of the data's time), its growth rate at the observed ``truth`` cells, one panel
    per time (the ``shown`` features; a seeded subsample of at most ``max_points`` a panel) on one diverging colour
    scale centred on 0: red grows, blue dies."""
    n = len(times) if rate is not None else 0
    shown = shown[: truth[0].shape[1]] if truth else shown
    cols, rows, size = _grid(n + 1)
    # Constrained: each panel's labels, the colorbar and the title get their room (audit 26: rows overlapped)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols + (1.0 if n else 0.6), size * rows + 0.6),
                             squeeze=False, layout="constrained")  # fmt: skip
    ax = axes.flat[0]
    observed_mass, times_array = np.asarray(observed_mass, dtype=np.float64), np.asarray(times, dtype=np.float64)
    unseen = np.array([_held(t, held_out) for t in times_array], dtype=bool)
    at = _time_axis(ax, times_array, "time")
    ax.plot(at(times_array[~unseen]), observed_mass[~unseen], "o", color="black", label="observed")
    if unseen.any():
        ax.plot(at(times_array[unseen]), observed_mass[unseen], "o", mfc="none", color="black", label="held out")
    ax.plot(at(times_array), predicted_mass, "-", color="tab:red", label="pushed")
    if np.all(np.isfinite(observed_mass)) and np.all(np.isfinite(predicted_mass)):
        spread = np.concatenate([np.asarray(observed_mass, float), np.asarray(predicted_mass, float)])
        if np.all(spread > 0) and spread.max() / spread.min() > 10:
            ax.set_yscale("log")
    logarithmic = ax.get_yscale() == "log"  # said in the title: one run's axis is linear, the next's not (audit 59)
    ax.set_title("mass / first time's" + (" (log scale)" if logarithmic else ""), fontsize=9)
    ax.legend(fontsize=7, framealpha=0.5)  # a point under the legend still shows (audit 18)
    ax.tick_params(labelsize=7)
    panels = list(axes.flat)[1 : n + 1]
    if rate is not None:
        rng = np.random.default_rng(0)
        cells = [_subsample(x, max_points, rng) for x in truth]
        rates = [np.ravel(rate(x, float(t))) for x, t in zip(cells, times, strict=True)]
        finite = np.abs(np.concatenate(rates))
        finite = finite[np.isfinite(finite)]
        # The scale holds 99 % of the cells' rates: a few far ones (14 of 3,133 above 10, audit 34) set it to ±19
        # and greyed out every later time's 0.4-0.8; the colour bar's arrows say more lie beyond.
        reach = max(float(np.quantile(finite, GROWTH_SCALE_SHARE)), 1e-12) if len(finite) else 1.0
        beyond = bool(len(finite)) and float(finite.max()) > reach
        norm = matplotlib.colors.Normalize(vmin=-reach, vmax=reach)
        for ax in panels[1:]:  # one frame for every time's cells
            ax.sharex(panels[0])
            ax.sharey(panels[0])
        for ax, t, x, r in zip(panels, times, cells, rates, strict=True):
            a = _project(x, shown)
            ax.scatter(a[:, 0], a[:, 1], s=3, c=r, cmap="coolwarm", norm=norm, rasterized=True, linewidths=0)
            ax.set_title(f"{_time_title(t, held_out, times)}: mean {np.nanmean(r):+.3g}", fontsize=9 if n <= 12 else 8)
            ax.tick_params(labelsize=7)
        names = axis_labels(axis_names, shown, truth[0].shape[1])
        for ax in panels:
            ax.set_xlabel(names[0], fontsize=8)
            ax.set_ylabel(names[1], fontsize=8)
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap="coolwarm"), ax=panels,
                     label="growth rate (d log mass / dt)", extend="both" if beyond else "neither")  # fmt: skip
    for ax in list(axes.flat)[n + 1 :]:
        ax.axis("off")
    fig.suptitle(_fit(title, fig))
    _save(fig, path, dpi=110 if n <= 12 else 90)


def action_audit(path: Path, audit: dict, title: str, noisy: bool = False, times=(), held_out=(),
                 growth: bool = False) -> None:  # fmt: skip
    """Bars per observed interval: the learned flow's kinetic action, the W2 geodesic's (the least any flow through
    the snapshots' laws spends; its cells' estimate, with +-2 sd of their sampling), what two samples of one law
    show by chance and, with a simulator, the true process's. ``noisy``: that chance is most of the geodesic, and
    the title says the ratio measures it (audit 27: a ratio of 0.07 printed bare, one its log called
    meaningless). ``times``: the observed times, whose intervals with a ``held_out`` end are starred (never trained
    on as such); ``growth`` (uAM): growth stands in for transport, so no geodesic bounds the flow (audit 47: its
    ratio of 0.42 stood bare)."""
    drift = "action_diffusion" in audit  # eAM's: its drift's energy, which the geodesic does not bound
    learned = "learned drift (∫ E|b|² dt; not bounded by the geodesic)" if drift else "learned flow"
    # The snapshots' geodesic bounds the action of a flow through their laws; the cells' own estimate of it moves
    # by its sampling sd (bars) and sits above it by about what two samples of one law show (audit 26).
    geodesic = "W2 geodesic of the snapshots (bars: ±2 sd of its sampling)"
    series = {learned: audit["action_flow"], geodesic: audit["action_geodesic"]}
    if "action_geodesic_noise" in audit:
        series["W2²/dt between two samples of one law"] = audit["action_geodesic_noise"]
    if "action_truth" in audit:
        series["true process"] = audit["action_truth"]
    if "action_diffusion" in audit:  # eAM: how the motion splits between drift and noise
        series["noise (∫ σ² d dt)"] = audit["action_diffusion"]
    intervals = list(audit["action_flow"])
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.0, 0.3 * len(intervals) * len(series) + 2)), 4.2))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        sd = audit.get("action_geodesic_sd") if name == geodesic else None
        ax.bar(np.arange(len(intervals)) + (i - (len(series) - 1) / 2) * width, list(values.values()), width,
               label=name, yerr=None if sd is None else 2 * np.array(list(sd.values())), capsize=2)  # fmt: skip
    starred = [False] * len(intervals)
    if len(times) == len(intervals) + 1:
        ends = [_held(t, held_out) for t in times]
        starred = [a or b for a, b in zip(ends[:-1], ends[1:], strict=True)]
    ax.set_xticks(np.arange(len(intervals)), [f"{name}*" if star else name for name, star in
                                              zip(intervals, starred, strict=True)],
                  rotation=45 if len(intervals) > 8 else 0)  # fmt: skip
    ax.set_xlabel("observed interval" + (" (*: an end held out, never trained on)" if any(starred) else ""))
    ax.set_ylabel("∫ E|v|² dt")
    bars = np.array([v for values in series.values() for v in values.values()], dtype=np.float64)
    bars = bars[np.isfinite(bars) & (bars > 0)]
    if len(bars) and bars.max() / bars.min() > ACTION_LOG_SPREAD:  # audit 50: 12 h to 168 h under 1 % of the axis
        ax.set_yscale("log")
    ratio = "" if drift else f"\n(flow / geodesic = {audit['action_ratio']:.3g})"  # its own line: never cut off
    if ratio and growth:
        ratio += "\ngrowth stands in for transport: the geodesic bounds no uAM flow"
    if ratio and noisy:  # a line of its own too: the narrowest figure cut it off
        ratio += "\nthe geodesic is mostly sampling noise: the ratio says little"
    ax.set_title(title + ratio, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path, dpi=110)


def projections(
    path: Path, truth: list[np.ndarray], predicted: list[np.ndarray], times, title: str, n_points: int = 1500,
    weights: list[np.ndarray] | None = None, shown: tuple[int, ...] = (0, 1, 2), axis_names: list[str] | None = None,
    held_out=(),
) -> None:  # fmt: skip
    """Observed against pushed cells in three 2-d projections of the ``shown`` features (rows: x0-x1, x0-x2, x1-x2 of
    the first three; fewer for fewer dimensions; ``axis_names``: every feature's name)
    at up to six evenly spaced observed times (columns): the AM paper's figure for its 3-d hydrogen atom. Each panel
    draws a seeded subsample of at most ``n_points`` finite cells per side (``truth`` and ``predicted`` may be lazy:
    only those cells are read; weighted particles, ``weights``, drawn by weight)."""
    shown = shown[: truth[0].shape[1]]
    pairs = [(shown[i], shown[j]) for i, j in ((0, 1), (0, 2), (1, 2)) if j < len(shown)] or [(shown[0], None)]
    names = list(axis_names or [f"x{i}" for i in range(truth[0].shape[1])])
    picks = np.unique(np.linspace(0, len(times) - 1, min(6, len(times))).round().astype(int))
    fig, axes = plt.subplots(len(pairs), len(picks), figsize=(2.5 * len(picks), 2.5 * len(pairs)), squeeze=False,
                             sharex="row", sharey="row")  # fmt: skip
    rng = np.random.default_rng(0)

    for col, k in enumerate(picks):
        a = _by_weight(truth[k], None, n_points, rng)
        b = _by_weight(predicted[k], None if weights is None else weights[k], n_points, rng)
        for row, (i, j) in enumerate(pairs):
            ax = axes[row, col]
            for x, color, label in ((a, "tab:blue", "observed"), (b, "tab:orange", "pushed")):
                ax.scatter(x[:, i], np.zeros(len(x)) if j is None else x[:, j], s=1.5, alpha=0.3, c=color,
                           label=label, rasterized=True)  # fmt: skip
            if row == 0:
                ax.set_title(_time_title(times[k], held_out, times), fontsize=9)
            if col == 0:
                ax.set_ylabel(names[j] if j is not None else "", fontsize=8)
            ax.set_xlabel(names[i], fontsize=8)
    axes[0, 0].legend(markerscale=5, fontsize=7, loc="best")
    fig.suptitle(_fit(title, fig))
    fig.tight_layout()
    _save(fig, path, dpi=100)


# What a distance's axis reads (audit 33: amcore's MMD is the unbiased estimate of its square, negative near 0).
DISTANCE_LABELS = {"mmd": "squared MMD (unbiased: below 0 near a match)"}


def distances_over_time(path: Path, series: dict[str, dict[str, float]], title: str, held_out=()) -> None:
    """One panel per distance (each on its own scale), its value at each scored time: e.g. amcore's ``mmd`` beside the
    paper's ``mmd_paper``. ``series`` maps a name to ``{"<t>": value}`` as metrics.json holds them; ``held_out``
    times get a dotted line (a peak there is the time never trained on, not a failure)."""
    fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.3), squeeze=False)
    for ax, (name, values) in zip(axes[0], series.items(), strict=True):
        ts = [float(t) for t in values]
        at = _time_axis(ax, ts)
        ax.plot(at(ts), list(values.values()), marker="o", ms=3)
        ax.axhline(0.0, color="0.6", lw=0.6)
        for k, h in enumerate(held_out):
            ax.axvline(float(at(float(h))), color="0.4", ls=":", lw=1,
                       label=None if k else "held out (never trained on)")  # fmt: skip
        if len(held_out):
            ax.legend(fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(DISTANCE_LABELS.get(name, name), fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(_fit(title, fig))
    fig.tight_layout()
    _save(fig, path, dpi=110)
