"""The experiment's table: every method, held-out time and seed in one long CSV, and its mean ± std view."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from amcore.data.store import read_store
from amcore.evaluation.evaluate import (
    ACTION_NOISE,
    ACTION_SHORT,
    DISTANCES,
    FEW_CELLS,
    FEW_EFFECTIVE,
    MASS_OFF,
    TRUTH_ERRORS,
    data_box,
    falls_short,
    percent,
)
from amcore.evaluation.holdout import read_prediction

COLUMNS = ["method", "holdout", "seed", "metric", "value"]
# The errors against a simulator's known fields first: what a simulated run is for (evaluate's, runs without a
# held-out time).
METRIC_ORDER = (*TRUTH_ERRORS, *DISTANCES, "nonfinite", "escaped", "effective_size", "fewest_cells", "coinciding",
                "mass_rel_error", "predicted_growth", "observed_growth", "course_excess", "course_escaped",
                "course_mass_error", "predicted_cells")  # fmt: skip


# A row ``(method, holdout, "", HELD_OUT_VAR + peer, v)``: the variance that sampling the held-out cells gives the
# difference of the two methods' W1 means over seeds (score's ``held_out_variance``, ``evaluate.pair_variances``).
HELD_OUT_VAR = "w1_held_out_var:"


def long_table(results: list[dict], variances: list[dict] = ()) -> pd.DataFrame:
    """Rows ``(method, holdout, seed, metric, value)`` from each result's ``table`` section, and one
    ``HELD_OUT_VAR``-peer row per pair of methods and held-out time of ``variances`` (score's ``held_out_variance``).

    ``seed`` is empty for deterministic baselines; ``holdout`` is ``none`` when no time was held out.
    """
    rows = [
        {"method": r["method"], "holdout": r["holdout"], "seed": r["seed"], "metric": metric, "value": value}
        for r in results
        for metric, value in r["table"].items()
    ]
    rows += [
        {
            "method": v["method"],
            "holdout": v["holdout"],
            "seed": "",
            "metric": HELD_OUT_VAR + v["peer"],
            "value": v["w1"],
        }
        for v in variances
    ]
    table = pd.DataFrame(rows, columns=COLUMNS)
    order = {name: i for i, name in enumerate(dict.fromkeys(table["method"]))}
    key = table["holdout"].map(lambda h: -np.inf if h == "none" else float(h))
    metric = table["metric"].map(lambda m: METRIC_ORDER.index(m) if m in METRIC_ORDER else len(METRIC_ORDER))
    table = table.assign(_k=metric, _h=key, _m=table["method"].map(order))
    columns = ["_k", "metric", "_h", "_m", "seed"]
    return table.sort_values(columns).drop(columns=["_k", "_h", "_m"]).reset_index(drop=True)


def _cell(values: np.ndarray, draw: bool = False) -> str:
    """Mean ± std over seeds; a seed whose prediction had non-finite cells has NaN distances and is never averaged
    into a number. ``draw``: one random draw the seeds share (the noise floor): its spread over seeds, 0, is no
    precision (audit 61: "0.2858 ± 0" where redrawn splits moved it by 20 %)."""
    failed = int(np.isnan(values).sum())
    if failed:
        return "FAILED" if failed == len(values) else f"FAILED ({failed} of {len(values)} seeds)"
    if len(values) == 1 or draw and np.ptp(values) == 0:
        return f"{values[0]:.4g}" + (" (one draw)" if draw else "")
    return f"{values.mean():.4g} ± {values.std(ddof=1):.2g}"


def _counted(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The runs with a positive count of ``metric``: ``method, holdout, seed, value`` (how many cells)."""
    part = table[(table["metric"] == metric) & (table["value"] > 0)]
    return part[["method", "holdout", "seed", "value"]].reset_index(drop=True)


def failures(table: pd.DataFrame) -> pd.DataFrame:
    """The runs whose prediction had NaN or inf cells (all of them when its weights rest on fewer than two)."""
    return _counted(table, "nonfinite")


def course_failed(table: pd.DataFrame) -> pd.DataFrame:
    """The runs whose push from the first time failed (NaN or inf cells or weights): their ``course_excess`` or
    ``course_mass_error`` is NaN, which no threshold flags (audit 68: a uAM whose course weights turned NaN topped
    the W1 table unmarked)."""
    part = table[table["metric"].isin(["course_excess", "course_mass_error"]) & table["value"].isna()]
    return part.drop_duplicates(["method", "holdout", "seed"])[["method", "holdout", "seed", "value"]].reset_index(
        drop=True
    )


def flagged(table: pd.DataFrame) -> pd.DataFrame:
    """The runs that flung finite cells out of the data (``escaped`` > 0)."""
    return _counted(table, "escaped")


def beyond(table: pd.DataFrame, metric: str, below: float | None = None, above: float | None = None) -> pd.DataFrame:
    """The runs whose ``metric`` is under ``below`` or over ``above`` (weighted particles resting on a few of them,
    a time of a handful of cells, a mass far off)."""
    part = table[table["metric"] == metric]
    part = part[part["value"] < below] if below is not None else part[part["value"] > above]
    return part[["method", "holdout", "seed", "value"]].reset_index(drop=True)


def short_of_geodesic(table: pd.DataFrame) -> pd.DataFrame:
    """The runs whose ``action_ratio`` falls short (``evaluate.falls_short``) where the noise leaves the ratio
    informative: a flow spending less than any flow through the snapshots can does not carry the cells as far as
    the snapshots moved (only balanced flows have a ratio in the table: uAM's growth stands in for transport)."""
    keys = ["method", "holdout", "seed"]
    ratio = table[table["metric"] == "action_ratio"].set_index(keys)["value"]
    noise = table[table["metric"] == "action_noise"].set_index(keys)["value"].reindex(ratio.index)
    short = (noise <= ACTION_NOISE) & falls_short(ratio, noise)
    return ratio[short].rename("value").reset_index()


def summary(table: pd.DataFrame, metric: str) -> dict[str, dict[str, np.ndarray]]:
    """``{method: {holdout: values over seeds}}`` plus a ``mean`` column: each seed's mean over held-out times."""
    part = table[table["metric"] == metric]
    out: dict[str, dict[str, np.ndarray]] = {}
    for method, rows in part.groupby("method", sort=False):
        cols = {h: g["value"].to_numpy() for h, g in rows.groupby("holdout", sort=False)}
        if len(cols) > 1:
            # NaN (a failed prediction) propagates: pandas' mean would skip it and average the other times.
            by_seed = rows.groupby("seed", sort=False)["value"]
            cols["mean"] = by_seed.agg(lambda v: float(np.mean(v.to_numpy()))).to_numpy()
        out[method] = cols
    return out


def paired_differences(
    table: pd.DataFrame, metric: str = "w1", reference: str = "am"
) -> dict[str, dict[str, tuple[float, float, float, int, bool]]]:
    """``{peer: {holdout: (mean, low, high, seeds, cells)}}``: ``reference`` minus each other method, paired by seed (a
    deterministic baseline's one value stands against every seed), its mean over the seeds and the 95 % interval of
    that mean: the seeds' Student-t half-width and, for W1 where the table holds them (:func:`held_out_variances`),
    the normal half-width of the held-out cells' sampling, in quadrature; ``mean``: the same on each seed's mean
    over the held-out times (the cells' part only where every time has one). ``cells``: whether the interval holds
    the cells' part. Negative favours the reference; an interval that holds 0 cannot tell the two apart.
    Empty without the reference or with fewer than two of its seeds; a pair with a NaN (failed) seed is NaN."""
    from scipy.stats import norm
    from scipy.stats import t as student

    part = table[(table["metric"] == metric) & (table["holdout"] != "none")]
    ref = part[part["method"] == reference].set_index(["holdout", "seed"])["value"]
    if ref.index.get_level_values("seed").nunique() < 2:
        return {}

    def interval(d: pd.Series, cells_var: float | None) -> tuple[float, float, float, int, bool]:
        n, mean, cells = len(d), float(d.mean(skipna=False)), cells_var is not None
        if n < 2:  # a peer sharing one seed with the reference: a difference, no spread to bound it
            return mean, float("nan"), float("nan"), n, cells
        seeds = student.ppf(0.975, n - 1) * d.std(ddof=1, skipna=False) / np.sqrt(n)
        half = float(np.hypot(seeds, norm.ppf(0.975) * np.sqrt(cells_var or 0.0)))
        return mean, mean - half, mean + half, n, cells

    cells = held_out_variances(table, metric, reference)

    ref_mean = ref.groupby("seed").agg(lambda v: float(np.mean(v.to_numpy())))
    out: dict[str, dict[str, tuple[float, float, float, int, bool]]] = {}
    for method, rows in part[part["method"] != reference].groupby("method", sort=False):
        peer = rows.set_index(["holdout", "seed"])["value"]
        if (rows["seed"] == "").all():  # a baseline: one value per held-out time, against every seed
            by_holdout = peer.droplevel("seed")
            diff = ref - by_holdout.reindex(ref.index.get_level_values("holdout")).to_numpy()
            peer_mean = float(np.mean(by_holdout.to_numpy()))
            diff_mean = ref_mean - peer_mean
        else:
            diff = (ref - peer).reindex(ref.index.intersection(peer.index))
            peer_mean = peer.groupby("seed").agg(lambda v: float(np.mean(v.to_numpy())))
            diff_mean = (ref_mean - peer_mean).reindex(ref_mean.index.intersection(peer_mean.index))
        var = cells.get(method, {})
        cols = {h: interval(d.droplevel("holdout"), var.get(h)) for h, d in diff.groupby("holdout", sort=False)}
        if len(cols) > 1:  # held-out times are independent samples: their variances add, over the times squared
            parts = [var.get(h) for h in cols]
            cols["mean"] = interval(diff_mean, None if None in parts else sum(parts) / len(parts) ** 2)
        out[method] = cols
    return out


def held_out_variances(table: pd.DataFrame, metric: str, reference: str) -> dict[str, dict[str, float]]:
    """``{peer: {holdout: variance}}`` of ``reference``'s W1 mean over seeds minus the peer's over the sampling of
    the held-out cells (``HELD_OUT_VAR`` rows; none where either method failed at every seed, or the time was
    scored by an amcore before them); empty for another metric."""
    if metric != "w1":
        return {}
    part = table[table["metric"].str.startswith(HELD_OUT_VAR) & (table["method"] == reference)]
    out: dict[str, dict[str, float]] = {}
    for row in part.itertuples():
        out.setdefault(row.metric.removeprefix(HELD_OUT_VAR), {})[row.holdout] = float(row.value)
    return out


def flag_sections(table: pd.DataFrame) -> list[tuple[pd.DataFrame, str, str, Callable[[float], str]]]:
    """Each kind of failed or flagged prediction: its runs, a short name, the heading of its table.md section and
    how a run's value reads. The kinds in :data:`OF_THE_DATA` judge the observed cells, not the method."""
    return [
        (failures(table), "failed", "**FAILED predictions** (NaN or inf cells, or weights resting on fewer than two "
         "cells; their distances are NaN, never scored):", lambda v: f"{int(v)} cells"),
        (flagged(table), "with escaped cells", "**Flagged predictions** (cells outside the box of every observed cell "
         "widened on every side by its longest side; distances kept):", lambda v: f"{int(v)} cells"),
        (beyond(table, "effective_size", below=FEW_EFFECTIVE), "resting on few particles", "**Flagged predictions** "
         f"(weights resting on under {FEW_EFFECTIVE:.0%} of the particles: the distances measure those few):",
         lambda v: f"effective size {v:.1%} of the particles"),
        (beyond(table, "fewest_cells", below=FEW_CELLS), f"on under {FEW_CELLS} cells", "**Flagged predictions** "
         f"(under {FEW_CELLS} cells on one side: the distances and the noise floor are mostly sampling noise):",
         lambda v: f"{int(v)} cells"),
        (_counted(table, "coinciding"), "against cells that all coincide", "**Flagged distances** (every observed "
         "cell of a time is one point: `mmd` and `neighbour_excess` judge the prediction's spread against none, "
         "however close it is; W1 and W2 hold):", lambda v: "observed cells at one point"),
        (beyond(table, "mass_rel_error", above=MASS_OFF), "with the mass off", "**Flagged predictions** (the "
         f"weighted particles' mass off by more than {MASS_OFF:.0%} at some time):",
         lambda v: f"mass error {percent(v)}"),
        (course_failed(table), "failing over the course", "**FAILED models** (the push from the first time ended "
         "in NaN or inf cells or weights: its W1 at the last time or its mass is not a number; cells that turned NaN "
         "earlier are counted as escaped below; the held-out distances are kept, but not the model's):",
         lambda v: "NaN or inf"),
        (beyond(table, "course_excess", above=1.0), "running the course off", "**Flagged models** (cells pushed "
         "from the first time end farther from the last time's than the first time's cells unmoved, by more than "
         "the noise floor; every seed):",
         lambda v: f"{v:.3g} noise floors farther"),
        (_counted(table, "course_escaped"), "with escaped cells over the course", "**Flagged models** (cells pushed "
         "from the first time left the data at some time; every seed):",
         lambda v: f"{int(v)} cells"),
        (beyond(table, "course_mass_error", above=MASS_OFF), "with the mass off over the course", "**Flagged "
         f"models** (the weighted particles pushed from the first time carry a mass off by more than {MASS_OFF:.0%} "
         "at some time; every seed):", lambda v: f"mass error {percent(v)}"),
        (beyond(table, "action_noise", above=ACTION_NOISE), "with an action ratio that says little", "**Flagged "
         f"action ratios** (the snapshots' sampling noise is over {ACTION_NOISE:.0%} of the geodesic action, so "
         "`action_ratio` measures that noise, not a detour):", lambda v: f"action_noise {v:.2f}"),
        (short_of_geodesic(table), "spending less than the snapshots need", "**Flagged action ratios** (under "
         f"{ACTION_SHORT:.0%} of the W2 geodesic's action less twice its sampling noise, the least any flow through "
         "the snapshots spends: the flow falls short of where the snapshots go):", lambda v: f"action_ratio {v:.2f}"),
    ]  # fmt: skip


OF_THE_DATA = (f"on under {FEW_CELLS} cells", "against cells that all coincide",
               "with an action ratio that says little")  # fmt: skip
FLAG_MARK = "⚑"  # beside a table cell with a failed or flagged run of the method (audit 68: none said which)


def marked_runs(table: pd.DataFrame) -> set[tuple[str, str]]:
    """``(method, holdout)`` of every failed or flagged run whose flag judges the method (not the data)."""
    return {(r.method, r.holdout) for runs, short, _, _ in flag_sections(table) if short not in OF_THE_DATA
            for r in runs.itertuples()}  # fmt: skip


def _mark(marked: set[tuple[str, str]], method: str, holdout: str) -> str:
    hit = any(m == method for m, _ in marked) if holdout == "mean" else (method, holdout) in marked
    return f" {FLAG_MARK}" if hit else ""


CHOSEN = ("head", "growth", "stride", "tension", "velocity_weight")  # the auto settings a table says the choice of


def chosen_lines(results: list[dict]) -> list[str]:
    """What the ``auto`` settings chose (:data:`CHOSEN`), by method and held-out time, each value with the seeds
    that chose it: each choice was made on its split's training times alone. Empty where nothing chose."""
    runs = [r for r in results if r.get("chosen")]
    holdouts = list(dict.fromkeys(str(r["holdout"]) for r in runs))
    lines = []
    methods = dict.fromkeys(r["method"] for r in runs)
    for method, setting in ((m, k) for m in methods for k in CHOSEN):
        cells = []
        for h in holdouts:
            seeds: dict = {}
            for r in runs:
                if r["method"] == method and str(r["holdout"]) == h and setting in r["chosen"]:
                    seeds.setdefault(r["chosen"][setting], []).append(str(r["seed"]))
            cells.append(", ".join(_chose(value, chose) for value, chose in sorted(seeds.items())) or "—")
        if any(cell != "—" for cell in cells):
            lines.append(f"| {method} | {setting} | " + " | ".join(cells) + " |")
    if not lines:  # a header without rows where only settings it does not list chose (audit 95)
        return []
    return ["### Chosen on the training times (the `auto` settings)", "",
            "| method | setting | " + " | ".join(f"t = {held_label(h, holdouts)}" if h != "none" else "none held out"
                                                for h in holdouts) + " |",
            "|" + "---|" * (len(holdouts) + 2), *lines, ""]  # fmt: skip


def _chose(value, seeds: list[str]) -> str:
    """``0.1 (seeds 0, 2)``: a chosen value and the seeds that chose it."""
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{shown} (seed{'s' * (len(seeds) > 1)} {', '.join(sorted(seeds, key=lambda s: (len(s), s)))})"


def held_label(holdout: str, holdouts) -> str:
    """A held-out time as the other outputs print it (6 digits), unless another would then print alike: the table's
    ``holdout`` keeps every digit, so that it gives the float back (audit 76: 0.020833333333333332 in table.md where
    metrics.json and the logs said 0.0208333)."""

    def short(h: str) -> str:
        try:
            return f"{float(h):g}"
        except ValueError:  # "none", "mean"
            return h

    alike = {h for h in holdouts if short(h) == short(holdout)} | {holdout}
    return short(holdout) if len(alike) == 1 else holdout


def markdown(table: pd.DataFrame, reference: str = "am", settings: dict | None = None, chosen: list[str] = ()) -> str:
    """One markdown table per metric: methods by held-out time, mean ± sample std over seeds; ``settings``: the
    evaluate settings the distances were computed with (their subsample sizes), where every run shares them;
    ``chosen``: what the ``auto`` settings chose (:func:`chosen_lines`), after W1 and its paired differences."""
    said = {key: f" = {value}" for key, value in (settings or {}).items()}
    present = set(table["metric"])
    # What each metric means, said only where the table has it (audit 33: a one-seed run without baselines or
    # held-out time read of baselines, seeds and weighted particles).
    higher = {
        "action_ratio": "`action_ratio` (1: a geodesic flow, above: a detour, well below: short of the snapshots)",
        "action_noise": "`action_noise` (the snapshots' own, the same for every method)",
        "effective_size": "`effective_size` (1: every particle counts alike)",
        "predicted_growth": "`predicted_growth` and `observed_growth` (weighted particles: the mass at the held-out "
        "time over the previous time's, pushed and observed)",
        "predicted_cells": "`predicted_cells` (a count: a smaller prediction's `sliced_*`, on all cells, carry more "
        "sampling noise, as do `mmd` and `energy` below `evaluate.kernel_max_size` cells; a baseline's OT is "
        "solved on at most `baseline_ot_max_size` cells)",
    }
    meanings = [
        (TRUTH_ERRORS, "`velocity_rel_error` (`drift_`, `growth_`; simulated data): the learned field's relative L2 "
         "error against the simulator's, pooled over the observed times: what a simulated run measures, where the "
         "distances may sit within their noise floor"),
        (("w1", "w2"), "`w1`, `w2`: exact OT on seeded subsamples (at most "
         f"`evaluate.max_exact_size`{said.get('max_exact_size', '')} cells per side); W1 rewards averaged points: "
         "displacement interpolation and OT pushes can score below a perfect sample"),
        (("w1_subsample_noise",), "`w1_subsample_noise`: W1 between two disjoint subsamples of the observed cells, the "
         "first as large as the prediction (at most half of them), the second of the rest: about what a perfect "
         "prediction of its size would score, or more where the prediction outnumbers half the observed cells (its "
         "subsample is then the smaller: about 1.1 to 1.6 times a perfect prediction's in 1 to 3 dimensions at a few "
         "hundred cells, 1.03 in 50, docs/metrics.md), so a `w1` near or even below it is not proof of a perfect "
         "prediction; it is no "
         "yardstick for the difference of two methods scored on the same cells (the paired section of a held-out "
         "table is)"),
        (("sliced_w1", "sliced_w2"), "`sliced_w1`, `sliced_w2`: all cells, on "
         f"`evaluate.projections`{said.get('projections', '')} directions, smaller than W (sqrt(d) times for a "
         "shift), compare them only with each other"),
        (("mmd", "energy"), "`mmd` (squared, unbiased: below 0 near a match), `energy`: subsamples of at most "
         f"`evaluate.kernel_max_size`{said.get('kernel_max_size', '')}"),
        (("neighbour_excess",), "`neighbour_excess`: how far the cells keep to their own kind among their 10 nearest "
         "neighbours (0: prediction and data mixed as two samples of one law, 1: apart); unweighted predictions "
         "only (weights all equal): one of unequal weights (uAM's; ot_displacement's where the counts differ) has "
         "no row"),
        (("course_excess",), "`course_excess`: W1 of the push from the first time less that of the first time's cells "
         "unmoved, at the last time, in noise floors (above 1: flagged)"),
        (("mass_rel_error",), "`mass_rel_error` (weighted particles): the predicted growth over the observed one "
         "(counts, or `dataset.population`), less 1, in absolute value"),
        (("course_mass_error",), "`course_mass_error`: `mass_rel_error` of the push from the first time at its worst "
         "observed time (above 0.5: flagged)"),
    ]  # fmt: skip
    exceptions = [text for name, text in higher.items() if name in present]
    baselines = (table["seed"] == "").any()
    lines = [
        "Mean ± standard deviation over training seeds"
        + (" (baselines are deterministic: one value)" if baselines else "")
        + ". Lower is better"
        + (f", but for {', '.join(exceptions[:-1])}{' and ' if len(exceptions) > 1 else ''}{exceptions[-1]}"
           if exceptions else "")
        + ".",
        "Distances are in the store's coordinates (after preprocessing, fitted on each split's training times): "
        "compare methods within a column, whose held-out time has units of its own.",
        "",
        "; ".join(text for names, text in meanings if present & set(names)) + " (docs/metrics.md).",
        "",
    ]  # fmt: skip
    if not any(present & set(names) for names, _ in meanings):
        del lines[-3:-1]  # no distance: no glossary
    sections, held = flag_sections(table), list(dict.fromkeys(table["holdout"]))
    for runs, _, heading, what in sections:
        if len(runs):
            lines += [heading, ""]
            lines += [
                f"- {r.method}, held-out {held_label(r.holdout, held)}, seed {r.seed or '-'}: {what(r.value)}"
                for r in runs.itertuples()
            ]
            lines.append("")
    if marked := marked_runs(table):
        lines += [f"{FLAG_MARK} below: a run of that method and held-out time (any seed) is failed or flagged above.",
                  ""]  # fmt: skip
    for metric in (m for m in dict.fromkeys(table["metric"]) if not m.startswith(HELD_OUT_VAR)):
        cols = summary(table, metric)
        holdouts = list(dict.fromkeys(h for c in cols.values() for h in c))
        names = {"none": f"{NOT_A_MEAN.get(metric, 'mean over observed times')} (none held out)", "mean": "mean"}
        header = ["method", *[names.get(h, f"t = {held_label(h, holdouts)}") for h in holdouts]]
        lines += [f"### {metric}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method, c in cols.items():
            draw = metric == "w1_subsample_noise"
            cells = [_cell(c[h], draw) if h in c else "—" for h in holdouts]
            cells = [cell if cell.startswith(("FAILED", "—")) else cell + _mark(marked, method, h)
                     for cell, h in zip(cells, holdouts, strict=True)]  # fmt: skip
            lines.append("| " + " | ".join([method, *cells]) + " |")
        lines.append("")
        if metric == "w1" and (pairs := paired_differences(table, metric, reference)):
            lines += _paired_lines(pairs, metric, reference)
        elif metric == "w1" and (table["holdout"] != "none").any():  # audit 61: the section left without a word
            lines += [f"No paired differences: {_unpaired(table, metric, reference)}.", ""]
        if metric == "w1" and (blind := _w1_blind(table, reference)):
            lines += [blind, ""]
        if metric == "w1" and (disagree := _w1_disagrees(table)):
            lines += [disagree, ""]
        if metric == "w1":  # beside the numbers the choices made (review 84: last, after some twenty tables)
            lines, chosen = [*lines, *chosen], []
    return "\n".join([*lines, *chosen])


def _w1_blind(table: pd.DataFrame, reference: str) -> str | None:
    """A line naming the held-out times where the noise floor (the reference's, else the first method's) is at or
    above the W1 of copying the previous time's cells: there W1 on these cells cannot tell any prediction from no
    motion at all (audit 90: Student-t tails in 6-d, a floor of 3.7 against 2.96 for copy_prev; 50-d, 4.07 against
    4.47), and sliced W1, on all cells, may still."""
    floors, copied = summary(table, "w1_subsample_noise"), summary(table, "w1").get("copy_prev", {})
    floor = floors.get(reference) or next(iter(floors.values()), {})

    def finite_mean(values: np.ndarray) -> float:  # a failed seed's NaN says nothing of the floor
        values = values[np.isfinite(values)]
        return float(values.mean()) if len(values) else math.nan

    pairs = {h: (finite_mean(floor[h]), finite_mean(copied[h])) for h in copied if h not in ("mean", "none")
             and h in floor}  # fmt: skip
    blind = {h: pair for h, pair in pairs.items() if pair[0] >= 0.9 * pair[1]}  # NaN on either side: never
    if not blind:
        return None
    held = list(dict.fromkeys(table["holdout"]))
    shown = ", ".join(f"t = {held_label(h, held)} ({f:.4g} against {c:.4g})" for h, (f, c) in blind.items())
    return (
        f"**W1 cannot separate the methods** at {shown}: the noise floor is within 10 % of, or above, the W1 of "
        "copying the previous time's cells, so on these cells W1 tells no prediction from no motion; compare "
        "`sliced_w1` (all cells) and the paired differences, or hold out a time with more cells."
    )


RANKS_APART = 0.01  # a gap that reorders two methods: twice the seeds' spread of W1 on EB (0.1-0.5 % of it)


def _w1_disagrees(table: pd.DataFrame) -> str | None:
    """A line naming the held-out times where W1 and sliced W1 put different methods first, each by at least
    ``RANKS_APART`` of the other's value (means over seeds; a failed seed leaves its method out; two predictions
    alike to rounding never count). On a few hundred cells in many dimensions W1 scores predictions of averaged
    points, narrower than the cells (displacement interpolation, OT pushes), under a fair sample of the law, where
    sliced W1 sees the narrower spread (audit 94: EB in 20 and 50 PCs, displacement first by W1 at every held-out
    time, AM first by sliced W1, energy and MMD)."""
    w1, sliced = summary(table, "w1"), summary(table, "sliced_w1")
    held = list(dict.fromkeys(table["holdout"]))
    said = []
    for h in held:
        if h == "none":
            continue
        means = {m: (float(np.mean(w1[m][h])), float(np.mean(sliced[m][h]))) for m in w1
                 if h in w1[m] and h in sliced.get(m, {})}  # fmt: skip
        means = {m: pair for m, pair in means.items() if all(map(math.isfinite, pair))}
        if len(means) < 2:
            continue
        by_w1, by_sliced = min(means, key=lambda m: means[m][0]), min(means, key=lambda m: means[m][1])
        a, b = means[by_w1], means[by_sliced]
        if b[0] > a[0] * (1 + RANKS_APART) and a[1] > b[1] * (1 + RANKS_APART):
            said.append(f"t = {held_label(h, held)}: W1 {by_w1} ({a[0]:.4g} against {b[0]:.4g}), sliced W1 "
                        f"{by_sliced} ({b[1]:.4g} against {a[1]:.4g})")  # fmt: skip
    if not said:
        return None
    return (
        f"**W1 and sliced W1 put different methods first**: {'; '.join(said)}. W1 on a few hundred cells, the more so "
        "in many dimensions, scores predictions of averaged points (displacement interpolation, OT pushes: narrower "
        "than the cells) under a fair sample of the law, where sliced W1 sees their narrower spread: read both, and "
        "energy (docs/metrics.md)."
    )


# What a run without held-out time reports for the metrics that are not a mean over its observed times
# (evaluate's table row: the worst time, or the whole course).
NOT_A_MEAN = {
    **dict.fromkeys(TRUTH_ERRORS, "against the truth, pooled over observed times"),
    "effective_size": "lowest at an observed time",
    "mass_rel_error": "highest at an observed time",
    "fewest_cells": "fewest at an observed time",
    "coinciding": "any observed time",
    "nonfinite": "most at an observed time",
    "escaped": "most at an observed time",
    "course_excess": "first to last time",
    "course_mass_error": "highest over the course",
    "action_ratio": "whole course",
    "action_noise": "whole course",
}


def _paired_lines(pairs: dict, metric: str, reference: str) -> list[str]:
    """The paired-differences section of :func:`markdown`."""
    holdouts = list(dict.fromkeys(h for c in pairs.values() for h in c))
    header = ["peer", *[("mean" if h == "mean" else f"t = {held_label(h, holdouts)}") for h in holdouts]]
    note, mark = _interval_note(metric, [pairs])
    lines = [
        f"### {reference} − peer, {metric}, paired by seed",
        "",
        f"Mean over seeds of `{reference}` minus the peer on the same seed, [95 % interval]; negative favours "
        f"`{reference}`; an interval holding 0 cannot tell them apart. {note} Read a difference at each "
        "held-out time: their mean can hide two that disagree.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for method, cols in pairs.items():
        lines.append("| " + " | ".join([method, *(_interval_cell(cols.get(h), mark) for h in holdouts)]) + " |")
    return [*lines, ""]


def _interval_note(metric: str, pairs: list[dict]) -> tuple[str, bool]:
    """What the paired intervals of ``pairs`` (one :func:`paired_differences` per table) hold, in a sentence, and
    whether some hold the held-out cells' sampling and others not (then each of the others is marked); nothing
    where no interval is shown (failed pairs, one seed)."""
    shown = [c for p in pairs for cols in p.values() for c in cols.values() if c[3] >= 2 and np.isfinite(c[0])]
    if not shown:
        return "", False
    if metric != "w1":
        return INTERVAL["other"], False
    if not any(c[4] for c in shown):
        return INTERVAL["older"], False
    mixed = not all(c[4] for c in shown)
    return INTERVAL["cells"] + (MIXED if mixed else ""), mixed


SAME_CELLS = (
    "every seed is scored on the same held-out cells, one sample of the time, and a difference moves "
    "with that sample too (audit 19: +0.044 [+0.038, +0.051] over seeds, +0.023 ± 0.008 over fresh "
    "draws of the held-out time)."
)
# What a paired interval holds: with the held-out cells' sampling (score's influence functions), or without.
INTERVAL = {
    "cells": "The interval holds the training seeds' spread (Student t) and the sampling of the held-out cells that "
    "every seed is scored on (normal, from W1's influence function at those cells, docs/leave-one-out.md), "
    "added in quadrature; it covered 91-100 % in audit 22, less (84 % at 300 cells) where the held-out cells "
    "form well-separated groups whose shares the methods get about right.",
    "older": "The interval holds the training seeds' spread only (these scores were written by an amcore before "
    "score took the held-out cells' sampling: rerun score for it): " + SAME_CELLS,
    "other": "This metric's intervals hold the training seeds' spread only (W1's hold the held-out cells' "
    "sampling too): " + SAME_CELLS,
}
MIXED = " An interval marked (seeds only) has no cells' part: its time was scored by an amcore before them."


def _unpaired(table: pd.DataFrame, metric: str, reference: str) -> str:
    """Why :func:`paired_differences` found no pair in ``table``."""
    part = table[(table["metric"] == metric) & (table["holdout"] != "none")]
    if part.empty:
        return "no held-out time"
    if not reference:
        return "no reference (no method named am; amcore table --reference MODEL names one)"
    if reference not in set(part["method"]):  # audit 41: said "0 seeds" of a model that has no such metric
        return f"{reference} has no {metric}"
    seeds = part.loc[part["method"] == reference, "seed"].nunique()
    if seeds < 2:
        return f"{seeds} seed{'s' if seeds != 1 else ''} of {reference}; pairs need two or more"
    return f"no method beside {reference}"


def _interval_cell(pair: tuple[float, float, float, int, bool] | None, mark: bool = False) -> str:
    """One paired difference as ``mean [low, high]``: FAILED for a failed seed, no interval from one seed;
    ``mark``: say where the interval holds the seeds only."""
    if pair is None:
        return "—"
    mean, low, high, n, cells = pair
    if np.isnan(mean):
        return "FAILED"
    if n < 2:
        return f"{mean:+.3g} (1 seed: no interval)"
    # one number of decimals for the three (audit 61: "+0.0866 [+0.0328, +0.14]"): three significant digits of the
    # largest, at least one of the narrowest
    marked = " (seeds only)" if mark and not cells else ""
    top, width = max(abs(mean), abs(low), abs(high)), high - low
    if not np.isfinite([top, width]).all() or 0 < top < 1e-6:  # inf, or too small for decimals (review 63)
        return f"{mean:+.3g} [{low:+.3g}, {high:+.3g}]{marked}"
    digits = max(0, 2 - math.floor(math.log10(top)) if top > 0 else 0)
    digits = max(digits, -math.floor(math.log10(width)) if width > 0 else 0)

    def shown(value: float) -> str:  # a mean that rounds to zero reads +0.000, never -0.000
        text = f"{value:+.{digits}f}"
        return "+" + text[1:] if float(text) == 0 else text

    return f"{shown(mean)} [{shown(low)}, {shown(high)}]{marked}"


def across_datasets(tables: dict[str, pd.DataFrame], metric: str = "w1", reference: str | dict[str, str] = "am") -> str:
    """One markdown summary of several experiments' long tables (``{dataset: table}``): each method's ``metric``
    averaged over held-out times (mean ± std over seeds) per dataset, the data's own floor
    (``w1_subsample_noise``), and the reference minus each peer paired by seed with its 95 % interval. The
    reference is one model for all, or ``{dataset: model}`` where the datasets' rules chose different ones."""
    names = list(tables)
    references = reference if isinstance(reference, dict) else dict.fromkeys(names, reference)
    methods = list(dict.fromkeys(m for t in tables.values() for m in t.loc[t["metric"] == metric, "method"]))
    means = {name: summary(t, metric) for name, t in tables.items()}
    floors = {name: summary(t, "w1_subsample_noise") for name, t in tables.items()}
    pairs = {name: paired_differences(t, metric, references[name]) for name, t in tables.items()}

    def column(cols: dict[str, np.ndarray]) -> np.ndarray:
        return cols.get("mean", next(iter(cols.values())))

    header = "| method | " + " | ".join(names) + " |\n|" + "---|" * (len(names) + 1)
    lines = []
    for name, table in tables.items():  # first what the means below hide: runs that failed or are flagged
        counts = [f"{len(runs)} {short} ({', '.join(dict.fromkeys(runs['method']))})"
                  for runs, short, _, _ in flag_sections(table) if len(runs)]  # fmt: skip
        lines += [f"- {name}: " + ", ".join(counts) + " (listed in its table.md)"] if counts else []
    lines = ["**Failed and flagged predictions**", "", *lines, ""] if lines else []
    lines += [f"### {metric}, mean over held-out times (± std over seeds)", ""]
    marked = {name: marked_runs(t) for name, t in tables.items()}
    if any(marked.values()):  # before the header: between it and the rows, it broke the table (audit 95)
        lines += [f"{FLAG_MARK}: a run of that method (any held-out time or seed) is failed or flagged in its "
                  "table.md.", ""]  # fmt: skip
    lines.append(header)
    for method in methods:
        cells = [_cell(column(means[n][method])) + _mark(marked[n], method, "mean") if method in means[n] else "—"
                 for n in names]  # fmt: skip
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    floor = [  # drawn for a prediction's size: the reference's, as the pairs below are against it
        f"{np.mean(column(floors[n].get(references[n], next(iter(floors[n].values()))))):.4g}" if floors[n] else "—"
        for n in names
    ]
    if metric == "w1":  # the floor is a W1: beside another distance it reads as a scale it is not (audit 19)
        lines += ["| *noise floor* (`w1_subsample_noise`, the reference's) | " + " | ".join(floor) + " |"]
    lines += [""]
    title = " / ".join(dict.fromkeys(references.values()))
    # audit 61: a plain "[95 % interval]" on sliced_w1 read as W1's, which holds the held-out cells' sampling too
    spread = "95 % interval" if metric == "w1" else "95 % interval of the seeds' spread alone"
    lines += [f"### {title} − peer, {metric}, paired by seed: mean [{spread}]", ""]
    note, mark = _interval_note(metric, [p for p in pairs.values() if p])
    lines += [note, ""] if note else []
    for name in (n for n in names if not pairs[n]):  # its column is all dashes: say why
        lines += [f"- {name}: nothing to pair ({_unpaired(tables[name], metric, references[name])})."]
    lines += [""] if not all(pairs.values()) else []
    lines += ["| method | " + " | ".join(f"{n} (− {references[n]})" for n in names) + " |", header.splitlines()[1]]
    for method in methods:
        cols = [pairs[n].get(method, {}) for n in names]
        cells = [
            "reference"
            if method == references[n]
            else _interval_cell(c.get("mean", next(iter(c.values()), None)), mark)
            for n, c in zip(names, cols, strict=True)
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, ""])


def load_panels(panels: list[dict]) -> list[dict]:
    """Observed and predicted cells of each ``{method, holdout, store, prediction}`` for the figure, in the view
    evaluate's plots draw (``plots.training_view``), and the axes it draws (``plots.shown_features``)."""
    from amcore.evaluation import plots  # matplotlib: only for the figure

    stores: dict[str, tuple] = {}
    loaded = []
    for panel in panels:
        if panel["store"] not in stores:  # a split's store, and the view its training cells choose (as evaluate's)
            snaps = read_store(panel["store"])
            box = data_box(snaps)
            view = plots.training_view(snaps, box)
            names = view.names(snaps.attrs.get("feature_names")) or [f"x{i}" for i in range(snaps.dim)]
            shown = plots.shown_features(view.box([snaps.snapshot(k) for k in range(snaps.n_snapshots)], box))
            stores[panel["store"]] = snaps, view, [names[i] for i in shown], shown
        snaps, view, axes, shown = stores[panel["store"]]
        x, weight, held_out = read_prediction(panel["prediction"])
        k = [float(t) for t in snaps.t_values].index(held_out)
        observed = view.turn(snaps.snapshot(k))
        loaded.append({**panel, "observed": observed, "predicted": view.turn(x), "weight": weight, "shown": shown,
                       "axes": axes})  # fmt: skip
    return loaded
