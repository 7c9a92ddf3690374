"""Which code made a result: the package version and, in a git checkout, its commit (``+dirty`` with uncommitted
changes to tracked files). Snakemake reruns nothing when the library changes, so each result says which code it
came from: MLflow runs carry it as tags, checkpoints in ``info["code"]``."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__version__ = "0.1.0"


@functools.cache
def code_version() -> dict[str, str]:
    """``{"amcore.version": ..., "amcore.git_commit": ...}``; the commit is ``unknown`` outside a git checkout (an
    installed wheel) or without git."""
    root = Path(__file__).resolve().parent
    try:
        # --no-optional-locks: jobs side by side must never hold the index lock a user's own git command needs
        run = functools.partial(subprocess.run, cwd=root, capture_output=True, text=True, timeout=5, check=True)
        top = Path(run(["git", "rev-parse", "--show-toplevel"]).stdout.strip()).resolve()
        if top != root.parent:  # a wheel inside some other repository (a venv in a project): not amcore's commit
            raise OSError(f"{root} is not the top of a checkout of amcore")
        commit = run(["git", "rev-parse", "HEAD"]).stdout.strip()
        dirty = run(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "unknown", ""
    return {"amcore.version": __version__, "amcore.git_commit": commit + ("+dirty" if dirty else "")}
