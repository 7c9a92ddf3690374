"""Pandas inputs matched by row label, as their users expect; a module of its own, light to import (every push of a
loaded model reads it)."""

from __future__ import annotations

import pandas as pd

from amcore.errors import InputError


def by_row_labels(x, values, name: str):
    """``values`` in the order of ``x``'s rows where both are pandas objects whose row labels differ: pandas users
    expect rows matched by label, as columns are by name (audit 57: a DataFrame sorted by a gene beside its times
    as a Series paired cells with other cells' times, in silence); refused where the labels only partly match.
    Anything else as given, matched by position: numpy, repeated labels, labels with none in common."""
    pandas = (pd.Series, pd.DataFrame)
    if not isinstance(x, pandas) or not isinstance(values, pandas) or x.index.equals(values.index):
        return values
    shared = x.index.isin(values.index)
    # Repeated labels (pd.concat of per-day frames) name no row, and labels with nothing in common (barcodes beside
    # 0, 1, 2, ...) were never meant to match: by position, as before
    if not (x.index.is_unique and values.index.is_unique) or not shared.any():
        return values
    if len(x) == len(values) and shared.all():
        return values.reindex(x.index)
    raise InputError(f"{name} and x are pandas objects whose row labels only partly match ({int(shared.sum())} of "
                     f"x's {len(x)} are among {name}'s {len(values)}): give them the same index, or pass numpy "
                     "arrays (matched by position)")  # fmt: skip
