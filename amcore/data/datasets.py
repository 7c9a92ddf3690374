"""Public datasets by name: downloaded from their authors' source, checked, converted to the npz the configs read.

Nothing is committed to this repository; ``amcore datasets fetch eb`` writes ``data/eb_nlsb_valtest_pca100.npz``
(``X`` cells x features, ``t`` the time of each cell), which ``config/leaveout/eb.yaml`` reads. The check is on
the content (the float64 bytes of ``X`` and ``t``), so a re-packed archive of the same numbers passes and any
other number fails. ``AMCORE_DATASETS_URL`` replaces the source's base address (a mirror, or a local server).
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amcore.atomic import replacing
from amcore.errors import InputError

DEFAULT_DIR = Path("data")
ENV_URL = "AMCORE_DATASETS_URL"


@dataclass(frozen=True)
class Dataset:
    """A named public dataset: where its source files are, how they become ``X``/``t``, and their checksums."""

    name: str
    description: str
    base_url: str
    sources: tuple[str, ...]
    file: str
    convert: Callable[[dict[str, dict[str, np.ndarray]]], dict[str, np.ndarray]]
    sha256: dict[str, str]  # of each converted array's little-endian float64 bytes
    license: str


def _eb(sources: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """NLSB's validation then test cells, as the leave-one-out protocol reads them (``ts`` becomes ``t``)."""
    parts = [sources["data/val_rna.npz"], sources["data/test_rna.npz"]]
    out = {"X": np.concatenate([p["X"] for p in parts]), "t": np.concatenate([p["ts"] for p in parts])}
    if all("v" in p for p in parts):
        out["v"] = np.concatenate([p["v"] for p in parts])
    return out


DATASETS = {
    "eb": Dataset(
        name="eb",
        description="embryoid-body differentiation, the public 2,750-cell NLSB subset: 100 PCs, 5 times x 550 cells",
        base_url="https://github.com/take-koshizuka/NLSB/raw/2a0228f9545064eabf225fb76eb7ff219e0b5874/",
        sources=("data/val_rna.npz", "data/test_rna.npz"),
        file="eb_nlsb_valtest_pca100.npz",
        convert=_eb,
        sha256={
            "X": "8b6fb8730428867910516d108f81d5883657846c7d427561c5e7efd0a5df442f",
            "t": "19f7d2a81624934422ca3b982cd08de681cc4593d92993431339da4153647187",
        },
        license="MIT (NLSB repository)",
    ),
}


def values_sha256(values: np.ndarray) -> str:
    """The SHA-256 of the values as little-endian float64, whatever their dtype or layout."""
    return hashlib.sha256(np.ascontiguousarray(values, dtype="<f8").tobytes()).hexdigest()


def _download(url: str) -> bytes:
    """The bytes at ``url``, with a progress line per 10 %."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            total, chunks, done, shown = int(response.headers.get("Content-Length") or 0), [], 0, -1
            while chunk := response.read(1 << 20):
                chunks.append(chunk)
                done += len(chunk)
                if total and (pct := 10 * done // total) > shown:
                    shown = pct
                    print(f"amcore datasets: {url}: {done / 2**20:.1f} of {total / 2**20:.1f} MB", file=sys.stderr)
    except OSError as err:
        raise InputError(f"{url}: download failed ({err})") from err
    return b"".join(chunks)


def _load_npz(url: str, data: bytes) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise InputError(f"{url}: not a readable .npz archive ({err})") from err


def fetch(name: str, to: str | Path = DEFAULT_DIR) -> Path:
    """Download, convert and check the dataset ``name``; returns the npz written in ``to`` (atomically: a failed
    check leaves nothing)."""
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    spec = DATASETS[name]
    base = os.environ.get(ENV_URL) or spec.base_url
    sources = {}
    for source in spec.sources:
        url = base.rstrip("/") + "/" + source
        sources[source] = _load_npz(url, _download(url))
    try:
        arrays = spec.convert(sources)
    except KeyError as err:
        raise InputError(f"{base}: the source files lack the key {err}; expected {spec.sources} from NLSB") from err
    for key, expected in spec.sha256.items():
        if values_sha256(arrays[key]) != expected:
            raise InputError(
                f"{base}: dataset {name!r}: the content of {key!r} does not match its checksum {expected[:12]}...; "
                "the source changed or the download is damaged, nothing written"
            )
    out = Path(to) / spec.file
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out) as tmp:
        np.savez(tmp, **arrays)
    return out
