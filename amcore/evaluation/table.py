"""The experiment's table: every method, held-out time and seed in one long CSV, and its mean ± std view."""

from __future__ import annotations

import numpy as np
import pandas as pd

from amcore.data.store import read_store
from amcore.evaluation.holdout import read_prediction

COLUMNS = ["method", "holdout", "seed", "metric", "value"]
METRIC_ORDER = ("w1", "w2", "w1_subsample_noise", "sliced_w1", "sliced_w2", "mmd", "energy", "nonfinite", "escaped")


def long_table(results: list[dict]) -> pd.DataFrame:
    """Rows ``(method, holdout, seed, metric, value)`` from each result's ``table`` section.

    ``seed`` is empty for deterministic baselines; ``holdout`` is ``none`` when no time was held out.
    """
    rows = [
        {"method": r["method"], "holdout": r["holdout"], "seed": r["seed"], "metric": metric, "value": value}
        for r in results
        for metric, value in r["table"].items()
    ]
    table = pd.DataFrame(rows, columns=COLUMNS)
    order = {name: i for i, name in enumerate(dict.fromkeys(table["method"]))}
    key = table["holdout"].map(lambda h: -np.inf if h == "none" else float(h))
    metric = table["metric"].map(lambda m: METRIC_ORDER.index(m) if m in METRIC_ORDER else len(METRIC_ORDER))
    table = table.assign(_k=metric, _h=key, _m=table["method"].map(order))
    columns = ["_k", "metric", "_h", "_m", "seed"]
    return table.sort_values(columns).drop(columns=["_k", "_h", "_m"]).reset_index(drop=True)


def _cell(values: np.ndarray) -> str:
    """Mean ± std over seeds; a seed whose prediction had non-finite cells has NaN distances and is never averaged
    into a number."""
    failed = int(np.isnan(values).sum())
    if failed:
        return "FAILED" if failed == len(values) else f"FAILED ({failed} of {len(values)} seeds)"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{values.mean():.4g} ± {values.std(ddof=1):.2g}"


def _counted(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The runs with a positive count of ``metric``: ``method, holdout, seed, value`` (how many cells)."""
    part = table[(table["metric"] == metric) & (table["value"] > 0)]
    return part[["method", "holdout", "seed", "value"]].reset_index(drop=True)


def failures(table: pd.DataFrame) -> pd.DataFrame:
    """The runs whose prediction had NaN or inf cells."""
    return _counted(table, "nonfinite")


def flagged(table: pd.DataFrame) -> pd.DataFrame:
    """The runs that flung finite cells out of the data (``escaped`` > 0)."""
    return _counted(table, "escaped")


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


def markdown(table: pd.DataFrame) -> str:
    """One markdown table per metric: methods by held-out time, mean ± sample std over seeds."""
    lines = [
        "Mean ± standard deviation over training seeds (baselines are deterministic: one value). Lower is better.",
        "",
        "`w1`, `w2`: exact OT on seeded subsamples (at most `evaluate.max_exact_size` cells per side); "
        "`w1_subsample_noise`: W1 between two disjoint subsamples of the observed cells (a `w1` near it cannot be "
        "told from a perfect prediction); `sliced_w1`, `sliced_w2`: all cells, smaller than W (sqrt(d) times for a "
        "shift), compare them only with each other; `mmd`, `energy`: subsamples of at most `evaluate.kernel_max_size` "
        "(docs/metrics.md).",
        "",
    ]
    headings = {
        "nonfinite": "**FAILED predictions** (NaN or inf cells; their distances are NaN, never scored):",
        "escaped": "**Flagged predictions** (cells outside three times the observed cells' box; distances kept):",
    }
    for metric, heading in headings.items():
        runs = _counted(table, metric)
        if len(runs):
            lines += [heading, ""]
            lines += [
                f"- {r.method}, held-out {r.holdout}, seed {r.seed or '-'}: {int(r.value)} cells"
                for r in runs.itertuples()
            ]
            lines.append("")
    for metric in dict.fromkeys(table["metric"]):
        cols = summary(table, metric)
        holdouts = list(dict.fromkeys(h for c in cols.values() for h in c))
        names = {"none": "mean over observed times (none held out)", "mean": "mean"}
        header = ["method", *[names.get(h, f"t = {h}") for h in holdouts]]
        lines += [f"### {metric}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method, c in cols.items():
            cells = [_cell(c[h]) if h in c else "—" for h in holdouts]
            lines.append("| " + " | ".join([method, *cells]) + " |")
        lines.append("")
    return "\n".join(lines)


def load_panels(panels: list[dict]) -> list[dict]:
    """Observed and predicted cells of each ``{method, holdout, store, prediction}`` for the figure."""
    stores: dict[str, tuple] = {}
    loaded = []
    for panel in panels:
        if panel["store"] not in stores:
            stores[panel["store"]] = read_store(panel["store"])
        snaps = stores[panel["store"]]
        x, weight, held_out = read_prediction(panel["prediction"])
        k = [float(t) for t in snaps.t_values].index(held_out)
        observed = np.asarray(snaps.snapshot(k))
        loaded.append({**panel, "observed": observed, "predicted": x, "weight": weight})
    return loaded
