"""The evaluate stage: distances between pushed and observed samples, and errors against analytic truth."""

from __future__ import annotations

import numpy as np

from amcore import metrics
from amcore.choices import DISTANCE_OPTIONS
from amcore.data.simulate import Simulator, truth_fields
from amcore.data.store import Snapshots
from amcore.errors import InputError
from amcore.models.trained import TrainedModel

# The evaluate section's keys and defaults (workflow/schemas/config.schema.yaml states the same).
DEFAULTS = {"max_exact_size": 2000, "kernel_max_size": 5000, "projections": 500, "truth_samples": 4000, "seed": 1}
DEFAULTS |= {"n_times": None, "mmd_paper_alphas": None}  # dense frames; the AM paper's MMD (select_times, mmd_paper)
# Every distance between a prediction and observed cells, under the same name at any size (docs/metrics.md).
DISTANCES = ("w1", "w2", "w1_subsample_noise", "sliced_w1", "sliced_w2", "mmd", "energy", "neighbour_excess")
FEW_EFFECTIVE = metrics.FEW_EFFECTIVE  # weighted particles' effective share below which a prediction is flagged
FEW_CELLS = 20  # cells on one side of a distance below which it is flagged: mostly sampling noise
MASS_OFF = 0.5  # relative error of the weighted particles' mass at some time above which a prediction is flagged
MASS_ADVICE = 0.2  # ... at a training time (whose mass uAM was given) above which evaluate speaks of `growth`
ACTION_NOISE = 0.5  # sampling noise's share of the geodesic action above which action_ratio says little
ACTION_SHORT = 0.9  # see falls_short


TRUTH_ERRORS = ("velocity_rel_error", "drift_rel_error", "growth_rel_error")  # :func:`score_truth`'s errors


def options(params: dict) -> dict:
    """The keyword arguments of :func:`distances` from the config's evaluate section (defaults filled in). Caps under
    :data:`FEW_CELLS` are refused (audit 17: at 5 cells a side every cell's 10 nearest neighbours were all the
    pooled cells, and ``neighbour_excess`` read 0, two samples of one law, for every prediction)."""
    chosen = {key: params.get(key, DEFAULTS[key]) for key in DISTANCE_OPTIONS}
    for key in ("max_exact_size", "kernel_max_size"):
        if not chosen[key] >= FEW_CELLS:
            raise InputError(
                f"evaluate.{key} must be at least {FEW_CELLS} cells a side, got {chosen[key]!r}: below, "
                "the distances are mostly sampling noise and the neighbour statistic sees every cell"
            )
    return chosen


def failed_cells(predicted: np.ndarray, weights: np.ndarray | None) -> int:
    """The predicted cells that carry no number (``metrics.lost_rows``), or all of them when the weights hold the
    population on fewer than two cells' worth of mass (effective sample size under 2): a point mass, not a
    prediction. Above 0 the prediction failed."""
    bad = metrics.lost_rows(predicted, weights)
    if not bad and weights is not None and metrics.effective_size(weights) < 2:
        return len(predicted)
    return bad


def percent(share: float) -> str:
    """A relative error in percent: whole ones, or three digits beyond 10,000 % (audit 55: a mass 1.8e19 times off
    printed 22 digits)."""
    return f"{share:.0%}" if abs(share) < 100 else f"{100 * share:.3g}%"


def distances(
    predicted: np.ndarray,
    observed: np.ndarray,
    weights: np.ndarray | None,
    *,
    max_exact_size: int = DEFAULTS["max_exact_size"],
    kernel_max_size: int = DEFAULTS["kernel_max_size"],
    projections: int = DEFAULTS["projections"],
    seed: int = DEFAULTS["seed"],
    where: str = "",
    noise: float | None = None,
    box: np.ndarray | None = None,
    influence: bool = False,
) -> dict:
    """Every distance of :data:`DISTANCES` between predicted (optionally weighted) and observed cells, and
    ``nonfinite``.

    ``w1``/``w2``: exact OT on seeded subsamples of at most ``max_exact_size`` cells per side;
    ``w1_subsample_noise``: exact W1 between two disjoint seeded subsamples of the observed cells, the first of as
    many cells as the prediction has (``prediction_size``; at most ``max_exact_size`` and half the observed), the
    second of the rest (at most ``max_exact_size``): what a perfect prediction of that size would score, or more
    where the prediction outnumbers half the observed cells (``metrics.subsample_noise``). Pass
    ``noise`` to reuse it for another prediction of the same size;
    ``sliced_w1``/``sliced_w2``: sliced distances on all cells over ``projections`` directions; ``mmd``
    (squared, multi-bandwidth RBF), ``energy`` and ``neighbour_excess`` (unweighted predictions only:
    ``metrics.neighbour_excess``) on seeded subsamples of at most ``kernel_max_size`` per side.
    ``nonfinite``: the number of predicted cells with a NaN or inf coordinate (or weight; every cell when the
    weights sum to zero, or hold the population on fewer than two cells' worth of mass: effective sample size
    under 2); a prediction with any such cell failed and every distance to it is NaN. ``escaped``: the
    finite predicted cells outside the box of ``box`` widened on every side by its longest side (``data_box``:
    every observed cell of the store; the observed cells when None; ``metrics.escaped_rows``): a flag, beside
    distances that stay honest.
    ``effective_size`` (weighted predictions only: weights not all equal): Kish's effective sample size of the
    weights as a share of the particles; below :data:`FEW_EFFECTIVE` the prediction is flagged.
    ``fewest_cells`` (only below :data:`FEW_CELLS`): the smaller side's cells; such distances, and
    the noise floor from halves of a handful of cells, are mostly sampling noise, and are flagged.
    ``coinciding`` (only then: 1): every observed cell is one point. The scale-free distances (``mmd``, whose
    bandwidth comes from the pooled cells, and ``neighbour_excess``) then judge the prediction's spread against none:
    a prediction 0.001 around the point read mmd 0.92 and neighbour_excess 1, where its W1 was 0.0012. Flagged.
    ``w1_influence`` (only with ``influence``, and a prediction that did not fail): W1's influence function at the
    observed cells it was solved on (``metrics.wassersteins_with_influence``: the same cells, in the same order,
    for every prediction), an array, for the variance the observed cells' sampling gives W1.
    Raises ``InputError`` naming ``where`` and the counts when either side has fewer than two cells: the MMD and
    the subsampling noise need two, and a distance to a single cell is no evidence of anything.
    """
    bad = failed_cells(predicted, weights)
    # Weighted particles (uAM, displacement interpolation with unequal counts): the share of them the weights rest on.
    share = {} if _unweighted(weights) else {"effective_size": float("nan") if bad else _share(weights)}
    fewest = min(len(predicted), len(observed))
    share |= {"fewest_cells": fewest} if fewest < FEW_CELLS else {}
    share |= {"coinciding": 1} if len(observed) and not np.ptp(np.asarray(observed), axis=0).any() else {}
    if bad:
        return {**dict.fromkeys(DISTANCES, float("nan")), "nonfinite": bad, "escaped": 0, **share}
    if min(len(predicted), len(observed)) < 2:
        raise InputError(
            f"{where or 'distances'}: {len(predicted)} predicted and {len(observed)} observed cell(s); every "
            "distance needs at least 2 cells per side (drop or merge a time point with a single cell)"
        )
    values, g = metrics.wassersteins_with_influence(predicted, observed, (1, 2), max_exact_size, seed, wa=weights)
    w1, w2 = values[1], values[2]
    returned = {"w1_influence": g} if influence else {}
    if noise is None:
        noise = metrics.subsample_noise(observed, max_exact_size, seed, size=prediction_size(predicted, weights))
    # equal weights as none: the same distances (to rounding), without merging each direction's two weight scales
    # (half of score's time on 200,000 cells a side, audit 28)
    even = None if _unweighted(weights) else weights
    sliced = metrics.sliced_wassersteins(predicted, observed, (1, 2), projections, seed, wa=even)
    # Neighbourhoods of weighted particles describe where the particles are, not the mass they carry: not defined.
    neighbours = {}
    if _unweighted(weights):
        neighbours["neighbour_excess"] = metrics.neighbour_excess(predicted, observed, max_size=kernel_max_size,
                                                                  seed=seed)  # fmt: skip
    return {
        "w1": w1,
        "w2": w2,
        "w1_subsample_noise": noise,
        "sliced_w1": sliced[1],
        "sliced_w2": sliced[2],
        "mmd": metrics.mmd_rbf(predicted, observed, max_size=kernel_max_size, seed=seed, wa=weights),
        "energy": metrics.energy_distance(predicted, observed, kernel_max_size, seed, wa=weights),
        **neighbours,
        "nonfinite": 0,
        "escaped": metrics.escaped_rows(predicted, observed if box is None else box),
        **share,
        **returned,
    }


def _unweighted(weights: np.ndarray | None) -> bool:
    """No weights, or equal ones (up to rounding): every particle counts the same."""
    if weights is None or len(weights) == 0:
        return True
    w = np.asarray(weights, dtype=np.float64)
    return bool(np.all(np.isfinite(w)) and w.max() > 0 and np.ptp(w) <= 1e-9 * w.max())


def _share(weights: np.ndarray) -> float:
    """Kish's effective sample size of ``weights`` as a share of the particles (0 for none)."""
    return metrics.effective_size(weights) / len(weights) if len(weights) else 0.0


def prediction_size(predicted: np.ndarray, weights: np.ndarray | None) -> int:
    """The cells a prediction's noise floor is for: its cells, or for weighted points their effective number
    (Kish's), which is what the spread of their sample holds."""
    if _unweighted(weights):
        return len(predicted)
    effective = metrics.effective_size(weights)
    return max(1, round(effective)) if np.isfinite(effective) else len(predicted)  # a failed one: no floor anyway


def pair_variances(influences: dict[str, list[np.ndarray]]) -> dict[str, dict[str, float]]:
    """``{method: {peer: variance}}``: the variance that sampling the observed cells gives the difference of two
    methods' W1 means over their seeds (``influences``: each method's seeds' influence functions at the cells W1
    compares, ``distances(..., influence=True)``; a seed that failed has none, and the mean is over the rest,
    where the table pairs seeds both methods have: alike unless seeds failed). A paired interval over training
    seeds misses it: every seed is scored on the same cells (audit 19: a difference read +0.044 [+0.038, +0.051]
    over seeds, and +0.023 +- 0.008 over fresh draws of the held-out time)."""
    means = {method: np.mean(g, axis=0) for method, g in influences.items() if g}
    return {
        method: {
            peer: metrics.held_out_variance([means[method], means[peer]], [1.0, -1.0])
            for peer in means
            if peer != method
        }
        for method in means
    }


def data_box(snaps: Snapshots) -> np.ndarray:
    """``(2, features)``: the lowest and highest value of each feature over every observed cell of the store, the
    data a predicted cell can leave (the cells of one time would flag a baseline's copy of another time's cells
    as escaped whenever the population moves). One pass over a lazy store."""
    import dask

    return np.stack(dask.compute(snaps.x.min(0), snaps.x.max(0))).astype(np.float64)


def score_marginals(snaps: Snapshots, predicted, weights, box: np.ndarray | None = None, say=None, **options) -> dict:
    """Each distance at each observed time after the first (``options``: those of :func:`distances`), their means
    (NaN when a time failed), the most non-finite pushed cells at any time (``nonfinite_max``), and for weighted
    particles the mass error and the effective sample size as a share of the particles (``effective_size``, Kish's
    ``(sum w)^2 / (n sum w^2)``; ``effective_size_min`` the worst time: weights that grew far apart leave a
    prediction resting on a few particles). ``predicted(time, cell, feature)`` and ``weights(time, cell)`` may be
    lazy: one time is read at a time. ``box``: :func:`data_box`'s, where the caller has it (a pass over the store).
    ``say(line)``, where given, hears of each time as it is scored (a minute a time at 10^5 cells, audit 21)."""
    result: dict = {}
    cells: dict = {}
    masses = snaps.masses() / snaps.masses()[0]
    box = data_box(snaps) if box is None else box
    for k in range(1, snaps.n_snapshots):
        key = f"{snaps.t_values[k]:g}"
        if say is not None:
            say(f"scoring t = {key} ({k} of {snaps.n_snapshots - 1}, {snaps.counts()[k]} observed cells)")
        w = None if weights is None else np.asarray(weights[k])
        observed = np.asarray(snaps.snapshot(k))
        scores = distances(np.asarray(predicted[k]), observed, w, where=f"t = {key}", box=box, **options)
        if w is not None:  # the share as given, even where the prediction failed
            scores |= {"mass_rel_error": float(abs(w.mean() - masses[k]) / masses[k]), "effective_size": _share(w)}
        for name, value in scores.items():
            result.setdefault(name, {})[key] = value
        # what the capped subsamples were drawn from (settings holds the caps): 50,000 pushed against 300,000
        cells.setdefault("predicted", {})[key], cells.setdefault("observed", {})[key] = len(predicted[k]), len(observed)
    for name in list(result):
        values = list(result[name].values())
        if name in ("nonfinite", "escaped", "coinciding"):  # the same particles at every time: count the worst
            result[f"{name}_max"] = int(max(values))
        elif name in ("effective_size", "fewest_cells"):  # the time resting on the fewest particles or cells
            result[f"{name}_min"] = float(np.min(values))  # NaN (a failed time) propagates, as in the means
        else:
            result[f"{name}_mean"] = float(np.mean(values))
        if name == "mass_rel_error":  # the flag looks at the worst time
            result[f"{name}_max"] = float(np.max(values))
    return result | {"cells": cells}


def course(snaps: Snapshots, scores: dict, opts: dict, unmoved: float | None = None) -> dict:
    """The whole course at once: W1 between the cells pushed from the first time and the last time's (``scores``:
    :func:`score_marginals`'), beside the first time's cells unmoved against the last time's; their ``ratio``, and
    the ``excess`` of the first over the second in units of the last time's noise floor. Above one floor the flow
    ran the course off: each interval can score well while the push across all of them ends farther from the data
    than not moving (raw counts, docs/benchmarks.md "Counts": 117 against 37.6). The floor, not the ratio, decides:
    where the population barely moves both W1 are sampling noise, and a perfect model's ratio is above 1 half the
    time (5 of 10 draws of a still 5-d Gaussian, 300 cells; excess within ±0.05 floors)."""
    last = f"{snaps.t_values[-1]:g}"
    if unmoved is None:  # the same for every model of the store: score passes it once computed
        first, final = np.asarray(snaps.snapshot(0)), np.asarray(snaps.snapshot(snaps.n_snapshots - 1))
        unmoved = metrics.wasserstein(first, final, p=1, max_size=opts["max_exact_size"], seed=opts["seed"])
    pushed, floor = scores["w1"][last], scores["w1_subsample_noise"][last]
    return {"time": last, "w1": pushed, "unmoved_w1": unmoved, "noise": floor, "ratio": _over(pushed, unmoved),
            "excess": _over(pushed - unmoved, floor)}  # fmt: skip


def ran_off(run: dict) -> str:
    """What a flagged :func:`course_flags` record (``run``) says, in a log line; of an SDE's push (eAM), whose noise
    alone spreads the cells, it names sigma too (audit 52: sigma 50 on data of spread 1, or in hours on minutes)."""
    return (f"pushed from the first time, its cells end farther from the last time's (W1 {run['w1']:.4g}) than the "
            f"first time's cells unmoved ({run['unmoved_w1']:.4g}), by {run['excess']:.3g} noise floors: the field "
            "runs the course off, whatever each interval scores"
            + ("; or the noise sigma is too large for the data (its time unit?)" * bool(run.get("noisy"))))  # fmt: skip


def course_flags(
    path, snaps: Snapshots, box: np.ndarray, opts: dict, unmoved: float | None = None
) -> tuple[dict, dict] | None:
    """A model's push from the first time (its trajectories store at ``path``) over the whole course, for every
    seed of a held-out split (evaluate scores the first seed's alone): ``course_excess`` (:func:`course`),
    ``course_escaped`` (the most cells outside ``box``, or NaN or inf, at an observed time after the first) and,
    for weighted particles, ``course_mass_error`` (the worst such time); and :func:`course`'s record (``unmoved``:
    its W1 of the first time's cells unmoved, where the caller has it). None for a baseline's prediction, which has
    no course. One observed time is read at a time."""
    from amcore.models.integrate import read_trajectories

    traj = read_trajectories(path, load=False)
    if "x" not in traj:
        return None
    steps = np.flatnonzero(traj["observed"].values)
    if len(steps) != snaps.n_snapshots:
        raise InputError(f"{path}: pushed to {len(steps)} observed times, but the store observes "
                         f"{snaps.n_snapshots}: trajectories of another store")  # fmt: skip
    masses = snaps.masses() / snaps.masses()[0]
    escaped, mass_errors = 0, []
    for k in range(1, snaps.n_snapshots):
        x = traj["x"][steps[k]].values
        # cells that became NaN or inf left the data too (their course_excess is NaN, which flags nothing)
        escaped = max(escaped, metrics.escaped_rows(x, box) + int((~np.isfinite(x).all(1)).sum()))
        if "weight" in traj:
            w = traj["weight"][steps[k]].values.astype(np.float64)
            mass_errors.append(float(abs(w.mean() - masses[k]) / masses[k]))  # a NaN stays NaN
    # W1 and its noise floor at the last time as distances() takes them (evaluate's numbers), and nothing else
    last = snaps.n_snapshots - 1
    weights = traj["weight"][steps[last]].values if "weight" in traj else None
    observed, size = np.asarray(snaps.snapshot(last)), opts["max_exact_size"]
    if failed_cells(x, weights):  # NaN: a failed push is never a distance
        w1 = floor = float("nan")
    else:
        w1 = metrics.wasserstein(x, observed, 1, size, opts["seed"], wa=weights)
        floor = metrics.subsample_noise(observed, size, opts["seed"], size=prediction_size(x, weights))
    key = f"{snaps.t_values[last]:g}"
    run = course(snaps, {"w1": {key: w1}, "w1_subsample_noise": {key: floor}}, opts, unmoved)
    run["noisy"] = traj.attrs.get("method") == "sde"
    flags = {"course_excess": run["excess"], "course_escaped": escaped}
    return flags | ({"course_mass_error": float(np.max(mass_errors))} if mass_errors else {}), run


def _over(value: float, scale: float) -> float:
    """``value / scale``; over a zero scale (cells that all coincide) infinite when positive, else 0; NaN (a failed
    prediction's) stays NaN."""
    if scale > 0:
        return value / scale
    return float("inf") if value > 0 else (value if np.isnan(value) else 0.0)


def score_truth(
    simulator: Simulator, snaps: Snapshots, model: TrainedModel, n: int, max_size: int, seed: int, floor: bool = True
) -> dict:
    """Relative L2 error under ``p_t`` of each learned field against the truth, on fresh samples.

    With ``floor``, also the W1 between the observed snapshot and a fresh sample of the same size (exact, on
    subsamples of at most ``max_size`` cells per side like ``w1``): the noise floor below which no W1 above can be
    told from zero. It draws from a generator of its own, so the errors are the same with it or without (score
    gives every seed of a held-out split the errors evaluate gives the first).
    """
    rng, floor_rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    sums: dict[str, list[float]] = {}
    by_time: dict[str, dict[str, float]] = {}
    floors = []
    for k, t in enumerate(snaps.t_values):
        x = simulator.sample(float(t), n, rng)
        truth = truth_fields(simulator, x, float(t))
        learned = model.fields(x, float(t))
        for name in truth.keys() & learned.keys():
            err, norm = metrics.relative_l2(learned[name], truth[name])
            total = sums.setdefault(name, [0.0, 0.0])
            total[0], total[1] = total[0] + err, total[1] + norm
            by_time.setdefault(f"{name}_rel_error_by_time", {})[f"{t:g}"] = float(np.sqrt(err / norm))
        if floor and k > 0:
            fresh = simulator.sample(float(t), len(snaps.snapshot(k)), floor_rng)
            floors.append(metrics.wasserstein(fresh, np.asarray(snaps.snapshot(k)), 1, max_size, seed))
    result = {f"{name}_rel_error": float(np.sqrt(e / n)) for name, (e, n) in sums.items()}
    return {**result, **by_time} | ({"w1_noise_floor_mean": float(np.mean(floors))} if floor else {})


def diffusion_energy(model: TrainedModel, knots: np.ndarray, points: int = 65) -> dict:
    """eAM's noise beside its drift's energy: ``int sigma_t^2 d dt`` per observed interval (the expected squared
    displacement the Brownian part adds, per unit of time summed), the trapezoid rule on ``points`` times each."""
    knots = np.asarray(knots, dtype=np.float64)
    per = {}
    for a, b in zip(knots[:-1], knots[1:], strict=True):
        grid = np.linspace(a, b, points)
        values = np.array([model.sigma(float(t)) ** 2 * model.dim for t in grid])
        per[interval_name(a, b)] = float(((values[1:] + values[:-1]) / 2 * np.diff(grid)).sum())
    return {"action_diffusion": per, "action_diffusion_total": float(sum(per.values()))}


def interval_name(a: float, b: float) -> str:
    """An observed interval's key in metrics.json and label in action.png: ``0-0.5``; ``-2.5 to -1`` where a time
    is negative (``-2.5--1`` read as a typo, audit 15)."""
    return f"{a:g}-{b:g}" if min(a, b) >= 0 else f"{a:g} to {b:g}"


def falls_short(ratio, noise):
    """Whether a balanced flow's ``action_ratio`` is under what any flow through the snapshots spends. The geodesic's
    estimate on finite samples sits above the truth by about its ``action_noise`` share, and up to twice it between
    two different laws (audit 11: 0.70 against at most 0.22 on a 0.25-long interval, noise 0.25): below
    ``ACTION_SHORT * (1 - 2 noise)`` the flow falls short of where the snapshots go. Numbers or arrays."""
    return ratio < ACTION_SHORT * (1 - 2 * noise)


def action_audit(
    x,
    time: np.ndarray,
    weight,
    snaps: Snapshots,
    max_size: int,
    seed: int,
    simulator: Simulator | None = None,
    samples: int = 4000,
    drift=None,
) -> dict:
    """The kinetic action the pushed population spends on each observed interval (``metrics.flow_action``) beside
    the piecewise W2 geodesic's (``metrics.geodesic_action``, the least any flow without growth through the snapshots'
    laws can spend; with the sd its cells' sampling gives each term and the total), their totals and ratio, and
    ``action_noise``: the share of the geodesic action two samples of one law would
    show by chance (each time's W2^2 between two disjoint subsamples, over dt); near 1 the ratio is not
    informative (``x(step, particle, feature)`` and ``weight(step, particle)`` may be lazy: read a block
    of steps at a time); with a simulator whose truth is a velocity, also the true process's action
    ``int E|v|^2 dt`` (Simpson's rule on 17 times per interval, ``samples`` fresh cells each).

    An SDE's particles (eAM: ``drift(cells, t)`` given) do not move at a velocity: their action is the drift's
    energy (``metrics.drift_action``), and ``action_ratio`` is NaN: the geodesic bounds the action of a flow whose
    velocity carries the marginals, which eAM's drift alone does not (the diffusion carries them too)."""
    knots = np.asarray(snaps.t_values, dtype=np.float64)
    names = [interval_name(a, b) for a, b in zip(knots[:-1], knots[1:], strict=True)]
    if drift is None:
        flow = metrics.flow_action(x, time, knots, weight)
    else:
        flow = metrics.drift_action(x, time, knots, drift, seed=seed)
    clouds = [np.asarray(snaps.snapshot(k), dtype=np.float64) for k in range(snaps.n_snapshots)]
    geodesic, geodesic_sd, total_sd = metrics.geodesic_action(clouds, knots, max_size, seed)
    # What W2^2 / dt would be between two samples of one law: the sampling noise inside each geodesic term. Close
    # times in many dimensions make it most of the geodesic action, which then measures the noise, not the flow.
    # Drawn from the sparser of the two times, sized as the other (20 cells beside 2,000 are the noise; audit 15).
    noise = []
    for a, b, dt in zip(clouds[:-1], clouds[1:], np.diff(knots), strict=True):
        sparse, other = (b, a) if len(b) <= len(a) else (a, b)
        noise.append(metrics.subsample_noise(sparse, max_size, seed, p=2, size=len(other)) ** 2 / dt)
    noise = np.array(noise)
    audit = {
        "action_flow": dict(zip(names, flow.tolist(), strict=True)),
        "action_geodesic": dict(zip(names, geodesic.tolist(), strict=True)),
        "action_geodesic_noise": dict(zip(names, noise.tolist(), strict=True)),
        "action_geodesic_sd": dict(zip(names, geodesic_sd.tolist(), strict=True)),
        "action_flow_total": float(flow.sum()),
        "action_geodesic_total": float(geodesic.sum()),
        "action_geodesic_total_sd": total_sd,
        "action_ratio": float(flow.sum() / geodesic.sum()) if geodesic.sum() > 0 and drift is None else float("nan"),
        "action_noise": float(noise.sum() / geodesic.sum()) if geodesic.sum() > 0 else float("nan"),
    }
    if simulator is not None and "velocity" in truth_fields(simulator, clouds[0][:1], float(knots[0])):
        rng = np.random.default_rng(seed)
        truth = []
        for a, b in zip(knots[:-1], knots[1:], strict=True):
            grid = np.linspace(a, b, 17)
            speed2 = [
                np.square(truth_fields(simulator, simulator.sample(float(t), samples, rng), float(t))["velocity"])
                .sum(1)
                .mean()
                for t in grid
            ]
            weights = np.r_[1, np.tile([4, 2], 7), 4, 1] * (b - a) / 48
            truth.append(float(np.dot(weights, speed2)))
        audit["action_truth"] = dict(zip(names, truth, strict=True))
        audit["action_truth_total"] = float(sum(truth))
    return audit


def select_times(snaps: Snapshots, predicted, weights, n_times: int | None) -> tuple[Snapshots, object, object]:
    """Dense frames: the first time and ``n_times`` evenly spaced observed times after it (the AM paper scores 10 of
    its 1,001 frames), with any held-out time kept; everything when ``n_times`` is None or covers every time.

    ``predicted`` and ``weights`` are indexed by observed time, as ``snaps``; the three are cut alike. They may be
    lazy (xarray or dask): the cut reads nothing.
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


def score_paper_mmd(snaps: Snapshots, predicted, alphas) -> dict:
    """The AM paper's metric: the unbiased squared MMD with ``sum_j exp(-alpha_j |x - y|^2)`` between the cells pushed
    from the first time and every cell observed at each later time (``mmd_paper_by_time``, signed), and its absolute
    value averaged over those times (``mmd_paper``, as the paper's code averages it). Unweighted; a time whose
    pushed cells are not all finite scores NaN, as every other distance does. ``predicted(time, cell, feature)`` may
    be lazy: one time is read at a time."""
    by_time = {}
    for k in range(1, snaps.n_snapshots):
        pushed = np.asarray(predicted[k])
        value = float("nan")
        if not metrics.lost_rows(pushed):
            value = metrics.mmd_paper(pushed, np.asarray(snaps.snapshot(k)), tuple(float(a) for a in alphas))
        by_time[f"{snaps.t_values[k]:g}"] = value
    return {"mmd_paper": float(np.mean(np.abs(list(by_time.values())))), "mmd_paper_by_time": by_time}
