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


def _git(*args: str) -> bytes:
    """A git command in amcore's checkout, its output as bytes (a changed file need not be UTF-8); ``OSError`` where
    amcore is no checkout of its own (a wheel inside some other repository: a venv in a project) or git fails."""
    root = Path(__file__).resolve().parent
    # --no-optional-locks: jobs side by side must never hold the index lock a user's own git command needs
    run = functools.partial(subprocess.run, cwd=root, capture_output=True, timeout=5, check=True)
    try:
        top = Path(run(["git", "rev-parse", "--show-toplevel"]).stdout.decode().strip()).resolve()
        if top != root.parent:
            raise OSError(f"{root} is not the top of a checkout of amcore")
        return run(["git", "--no-optional-locks", *args]).stdout
    except (subprocess.SubprocessError, ValueError) as err:  # ValueError: a checkout's path that is not UTF-8
        raise OSError(str(err)) from err


@functools.cache
def uncommitted_changes() -> bytes:
    """``git diff HEAD`` of amcore's checkout (tracked files; git's own diff, whatever diff tool a user configured);
    empty when clean, outside a checkout, without git, or where the diff fails."""
    try:
        return _git("diff", "HEAD", "--binary", "--no-ext-diff", "--no-textconv", "--no-color")
    except OSError:
        return b""


@functools.cache
def code_version() -> dict[str, str]:
    """``{"amcore.version", "amcore.git_commit", "amcore.packages"}``; the commit is ``unknown`` outside a git
    checkout (an installed wheel) or without git; two dirty trees of one commit differ by their changes' hash
    (``+dirty.unknown`` where git said the tree is dirty and its diff failed)."""
    try:
        commit = _git("rev-parse", "HEAD").decode().strip()
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no").strip())
    except OSError:
        commit, dirty = "unknown", False
    changes = uncommitted_changes()
    if dirty or changes:
        commit += "+dirty." + (hashlib.sha256(changes).hexdigest()[:12] if changes else "unknown")
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
