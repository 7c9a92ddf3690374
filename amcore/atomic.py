"""Outputs that appear whole or not at all: written under a temporary sibling name, renamed into place at the end.

A killed or failing job leaves either the previous file or none, never one that looks finished; the rename is
atomic within a file system.

A job killed outright (SIGKILL, or SIGTERM to a process of a multi-process training) cannot remove its temporary
itself, and its rerun writes under another name (the PID differs), so each write first removes the temporaries of
the same output whose writer is dead. Liveness is judged by PID on this host: a temporary is kept while a process of
that PID runs here, and removed otherwise, even when its writer was another host's job still running on a shared
file system. Two live jobs writing the same output are already a conflict (Snakemake never schedules one output
twice, and locks its working directory against a second instance; after kill -9 of Snakemake on a cluster its jobs
run on, and docs/cluster.md says to cancel them before the rerun), so this only assumes what the workflow
guarantees.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path


def temporary_name(path: Path, pid: int) -> Path:
    """The temporary sibling the process ``pid`` writes ``path`` to: hidden, same suffix."""
    return path.with_name(f".{path.stem}.tmp-{pid}{path.suffix}")


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` (same suffix, so writers that go by it still work) to write a file
    or a directory to (its folder is created); on a clean exit it replaces ``path``, otherwise it is removed."""
    path = Path(path)
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = temporary_name(path, os.getpid())
    _remove(tmp)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            if not tmp.is_dir() and any(path.iterdir()):
                raise FileExistsError(f"{path} is a zarr store: amcore will not replace it with a file")
            shutil.rmtree(path)  # os.replace cannot replace a non-empty directory
        os.replace(tmp, path)
    finally:
        _remove(tmp)


ZARR_MARKERS = ("zarr.json", ".zgroup", ".zattrs", ".zarray")


def check_replaceable(path: str | Path) -> None:
    """Refuse an output path that holds a folder amcore did not write: only an earlier zarr store (or an empty
    folder) is replaced, never a folder of someone's files."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink() and any(path.iterdir()):
        if not any((path / marker).exists() for marker in ZARR_MARKERS):
            raise FileExistsError(
                f"{path} is a folder that amcore did not write (not a zarr store): it will not delete it to write "
                "its output there; choose another path, or move the folder away"
            )


@contextlib.contextmanager
def scratch(path: str | Path) -> Iterator[Path]:
    """A scratch folder named after ``path`` (its temporary sibling), removed on exit; those of dead writers
    (a killed job) are removed first, as ``replacing`` does."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = temporary_name(path, os.getpid())
    _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
    finally:
        _remove(tmp)


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries of ``path`` left by writers no longer running on this host; returns them."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.stem)}\.tmp-(\d+){re.escape(path.suffix)}")
    removed = []
    with contextlib.suppress(FileNotFoundError):  # no parent folder yet: nothing stale either
        for sibling in path.parent.iterdir():
            match = pattern.fullmatch(sibling.name)
            if match and not _running(int(match.group(1))):
                _remove(sibling)
                removed.append(sibling)
    return removed


def _running(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (this one included); unknown PIDs count as running."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return True  # never a writer's PID; os.kill(0, ...) would address a whole process group
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or not a PID: leave it alone
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def damaged_member(path: str | Path) -> str | None:
    """The first member of the zip archive at ``path`` whose bytes fail their CRC, else None (also for a file that
    is no zip archive: its reader says so). ``torch.save`` writes each tensor's CRC and ``torch.load`` checks none:
    a checkpoint with damaged bytes loaded as numbers (audit 85: one weight tensor's 16 bytes moved the velocity by
    0.44)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip()
    except (zipfile.BadZipFile, OSError):
        return None
