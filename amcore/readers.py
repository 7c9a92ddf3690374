"""Readers turning a user's file into ``(x, time)`` arrays, with errors that name the file and key."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np


class InputError(ValueError):
    """Bad user input: the message names the file, the key and what was expected."""


def read_npz(path: str | Path, x_key: str = "X", t_key: str = "t") -> tuple[np.ndarray, np.ndarray]:
    """An ``.npz`` holding a ``(cells, features)`` matrix and one time label per cell."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        raise InputError(f"{path}: not a readable .npz archive ({err})") from err
    with archive:
        for key in (x_key, t_key):
            if key not in archive.files:
                raise InputError(f"{path}: key {key!r} missing; the archive holds {sorted(archive.files)}")
        x, t = np.asarray(archive[x_key]), np.asarray(archive[t_key]).reshape(-1)
    if x.ndim != 2:
        raise InputError(f"{path}: key {x_key!r} must be 2-d (cells, features), got shape {x.shape}")
    if len(t) != len(x):
        raise InputError(f"{path}: key {t_key!r} has {len(t)} labels but {x_key!r} has {len(x)} rows")
    if not np.issubdtype(t.dtype, np.number):
        raise InputError(f"{path}: key {t_key!r} must hold numeric times, got dtype {t.dtype}")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise InputError(f"{path}: key {x_key!r} has {bad} rows with NaN or inf values")
    return x.astype(np.float32), t.astype(np.float64)
