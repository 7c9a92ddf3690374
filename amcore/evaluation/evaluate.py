"""The evaluate stage: distances between pushed and observed samples, and errors against analytic truth."""

from __future__ import annotations

import numpy as np

from amcore import metrics
from amcore.data.simulate import Simulator, truth_fields
from amcore.data.store import Snapshots
from amcore.models.trained import TrainedModel


def distances(
    predicted: np.ndarray, observed: np.ndarray, weights: np.ndarray | None, max_size: int, seed: int
) -> dict[str, float]:
    """The table's metrics between predicted (optionally weighted) and observed cells.

    ``w1``/``w2`` exact up to ``max_size`` cells per side (``sliced_w1``/``sliced_w2`` above), squared MMD
    with a multi-bandwidth RBF kernel, the energy distance, and ``nonfinite``: the number of predicted cells
    with a NaN or inf coordinate (or weight; every cell when the weights sum to zero). A prediction with any such
    cell failed: every distance is NaN.
    """
    bad = metrics.lost_rows(predicted, weights)
    if bad:
        names = [metrics.wasserstein_name(len(predicted), len(observed), p, max_size) for p in (1, 2)]
        return {**dict.fromkeys([*names, "mmd", "energy"], float("nan")), "nonfinite": bad}
    result = {}
    for p in (1, 2):
        value, name = metrics.wasserstein(predicted, observed, p, max_size, seed, wa=weights)
        result[name] = value
    result["mmd"] = metrics.mmd_rbf(predicted, observed, max_size=max_size, seed=seed, wa=weights)
    result["energy"] = metrics.energy_distance(predicted, observed, max_size, seed, wa=weights)
    result["nonfinite"] = 0
    return result


def score_marginals(
    snaps: Snapshots, predicted: np.ndarray, weights: np.ndarray | None, max_size: int, seed: int
) -> dict:
    """Each distance at each observed time after the first, their means (NaN when a time failed), the most
    non-finite pushed cells at any time (``nonfinite_max``), and the mass error of weighted particles."""
    result: dict = {}
    masses = snaps.masses() / snaps.masses()[0]
    for k in range(1, snaps.n_snapshots):
        key = f"{snaps.t_values[k]:g}"
        w = None if weights is None else weights[k]
        for name, value in distances(predicted[k], np.asarray(snaps.snapshot(k)), w, max_size, seed).items():
            result.setdefault(name, {})[key] = value
        if w is not None:
            result.setdefault("mass_rel_error", {})[key] = float(abs(w.mean() - masses[k]) / masses[k])
    for name in list(result):
        values = list(result[name].values())
        if name == "nonfinite":  # the same particles at every time: a cell lost once stays lost
            result["nonfinite_max"] = int(max(values))
        else:
            result[f"{name}_mean"] = float(np.mean(values))
    return result


def score_truth(simulator: Simulator, snaps: Snapshots, model: TrainedModel, n: int, max_size: int, seed: int) -> dict:
    """Relative L2 error under ``p_t`` of each learned field against the truth, on fresh samples.

    Also the W1 between the observed snapshot and a fresh sample of the same size: the noise floor below
    which no W1 above can be told from zero.
    """
    rng = np.random.default_rng(seed)
    sums: dict[str, list[float]] = {}
    by_time: dict[str, dict[str, float]] = {}
    floor = []
    for k, t in enumerate(snaps.t_values):
        x = simulator.sample(float(t), n, rng)
        truth = truth_fields(simulator, x, float(t))
        learned = model.fields(x, float(t))
        for name in truth.keys() & learned.keys():
            err, norm = metrics.relative_l2(learned[name], truth[name])
            total = sums.setdefault(name, [0.0, 0.0])
            total[0], total[1] = total[0] + err, total[1] + norm
            by_time.setdefault(f"{name}_rel_error_by_time", {})[f"{t:g}"] = float(np.sqrt(err / norm))
        if k > 0:
            fresh = simulator.sample(float(t), len(snaps.snapshot(k)), rng)
            floor.append(metrics.wasserstein(fresh, np.asarray(snaps.snapshot(k)), 1, max_size, seed)[0])
    result = {f"{name}_rel_error": float(np.sqrt(e / n)) for name, (e, n) in sums.items()}
    return {**result, **by_time, "w1_noise_floor_mean": float(np.mean(floor))}


def select_times(
    snaps: Snapshots, predicted: np.ndarray, weights: np.ndarray | None, n_times: int | None
) -> tuple[Snapshots, np.ndarray, np.ndarray | None]:
    """Dense frames: the first time and ``n_times`` evenly spaced observed times after it (the AM paper scores 10 of
    its 1,001 frames), with any held-out time kept; everything when ``n_times`` is None or covers every time.

    ``predicted`` and ``weights`` are indexed by observed time, as ``snaps``; the three are cut alike.
    """
    k_last = snaps.n_snapshots - 1
    if not n_times or n_times >= k_last:
        return snaps, predicted, weights
    held_out = {float(t) for t in snaps.attrs.get("holdout_times", [])}
    keep = set(np.round(np.linspace(0, k_last, n_times + 1)).astype(int).tolist())
    keep |= {k for k, t in enumerate(snaps.t_values) if float(t) in held_out}
    idx = sorted(keep)
    dropped = [t for k, t in enumerate(snaps.t_values) if k not in keep]
    return snaps.drop_times(dropped), predicted[idx], None if weights is None else weights[idx]


def score_paper_mmd(snaps: Snapshots, predicted: np.ndarray, alphas) -> dict:
    """The AM paper's metric: the unbiased squared MMD with ``sum_j exp(-alpha_j |x - y|^2)`` between the cells pushed
    from the first time and every cell observed at each later time (``mmd_paper_by_time``, signed), and its absolute
    value averaged over those times (``mmd_paper``, as the paper's code averages it). Unweighted; a time whose
    pushed cells are not all finite scores NaN, as every other distance does."""
    by_time = {}
    for k in range(1, snaps.n_snapshots):
        pushed = predicted[k]
        value = float("nan")
        if not metrics.lost_rows(pushed):
            value = metrics.mmd_paper(pushed, np.asarray(snaps.snapshot(k)), tuple(float(a) for a in alphas))
        by_time[f"{snaps.t_values[k]:g}"] = value
    return {"mmd_paper": float(np.mean(np.abs(list(by_time.values())))), "mmd_paper_by_time": by_time}
