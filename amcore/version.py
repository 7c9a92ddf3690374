"""Which code made a result: the package version, the versions of the packages its numbers rest on and, in a git
checkout, its commit (``+dirty.<hash of the uncommitted changes>`` with changes to tracked files). Snakemake reruns
nothing when the library changes, so each result says which code it came from: MLflow runs carry it as tags (the
parent run also the uncommitted changes as ``code.patch``), checkpoints in ``info["code"]``."""

from __future__ import annotations

import functools
import hashlib
import subprocess
import sys
from importlib import metadata
from pathlib import Path

__version__ = "0.1.0"

# The packages whose versions can move a number: the network and its sums, OT, the distances, the stores.
PACKAGES = ("torch", "numpy", "scipy", "pot", "torchcfm", "pandas", "dask", "xarray", "zarr", "anndata", "snakemake",
            "mlflow")  # fmt: skip


@functools.cache
def uncommitted_changes() -> str:
    """``git diff HEAD`` of amcore's checkout (tracked files); empty when clean, outside a checkout or without git."""
    root = Path(__file__).resolve().parent
    try:
        # --no-optional-locks: jobs side by side must never hold the index lock a user's own git command needs
        run = functools.partial(subprocess.run, cwd=root, capture_output=True, text=True, timeout=5, check=True)
        top = Path(run(["git", "rev-parse", "--show-toplevel"]).stdout.strip()).resolve()
        if top != root.parent:  # a wheel inside some other repository (a venv in a project): not amcore's commit
            return ""
        return run(["git", "--no-optional-locks", "diff", "HEAD", "--binary"]).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.cache
def code_version() -> dict[str, str]:
    """``{"amcore.version", "amcore.git_commit", "amcore.packages"}``; the commit is ``unknown`` outside a git
    checkout (an installed wheel) or without git; two dirty trees of one commit differ by their changes' hash."""
    root = Path(__file__).resolve().parent
    try:
        run = functools.partial(subprocess.run, cwd=root, capture_output=True, text=True, timeout=5, check=True)
        top = Path(run(["git", "rev-parse", "--show-toplevel"]).stdout.strip()).resolve()
        if top != root.parent:
            raise OSError(f"{root} is not the top of a checkout of amcore")
        commit = run(["git", "rev-parse", "HEAD"]).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    changes = uncommitted_changes()
    if changes:
        commit += "+dirty." + hashlib.sha256(changes.encode()).hexdigest()[:12]
    return {"amcore.version": __version__, "amcore.git_commit": commit, "amcore.packages": package_versions()}


def package_versions() -> str:
    """``python 3.11.7; torch 2.13.0; ...``: Python's and each of :data:`PACKAGES` installed."""
    found = [f"python {sys.version.split()[0]}"]
    for name in PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return "; ".join(found)
