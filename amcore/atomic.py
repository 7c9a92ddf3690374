"""Outputs that appear whole or not at all: written under a temporary sibling name, renamed into place at the end.

A killed or failing job leaves either the previous file or none, never one that looks finished; the rename is
atomic within a file system.

A job killed outright (SIGKILL, or SIGTERM to a process of a multi-process training) cannot remove its temporary
itself, and its rerun writes under another name (the PID differs), so each write first removes the temporaries of
the same output whose writer is dead. Liveness is judged by PID on this host: a temporary is kept while a process of
that PID runs here, and removed otherwise, even when its writer was another host's job still running on a shared
file system. Two live jobs writing the same output are already a conflict (Snakemake never schedules one output
twice, and locks its working directory against a second instance), so this only assumes what the workflow
guarantees, except after kill -9 of Snakemake: its jobs run on, and its rerun starts the same jobs beside them.
Where that costs more than time, a job holds a lease on its output (``leased``, the training's resumable state)
and the second writer is refused while the first runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

from amcore.errors import AlreadyRunning


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


def lease_path(path: str | Path) -> Path:
    """The lease a writer of ``path`` holds while it runs: ``<path>.running``."""
    path = Path(path)
    return path.with_name(path.name + ".running")


@contextlib.contextmanager
def leased(path: str | Path, what: str) -> Iterator[None]:
    """Hold ``<path>.running`` while this process writes ``path`` (and its resumable state). A second writer is
    refused with :class:`AlreadyRunning` while the holder runs (a job left running by a Snakemake killed with
    kill -9, and its rerun resuming from the same state beside it: two trainings wrote one ``model.pt.partial``);
    the lease of one that no longer runs is taken over. ``what`` names the job in the refusal."""
    lease = lease_path(path)
    lease.parent.mkdir(parents=True, exist_ok=True)
    me = _holder()
    _claim(lease, me, path, what)
    try:
        yield
    finally:
        if _read_holder(lease) == me:  # never another's: a process that took over a lease judged stale
            lease.unlink(missing_ok=True)


def check_lease(path: str | Path, what: str) -> None:
    """Raise :class:`AlreadyRunning` where a live process holds ``path``'s lease, without taking it: a caller that
    records its attempt elsewhere (a stage's MLflow run) refuses before it starts."""
    lease = lease_path(path)
    holder = _read_holder(lease)
    if holder is not None and (runs := _holder_runs(holder)) is not False:
        raise AlreadyRunning(_refusal(path, lease, holder, what, runs))


def _claim(lease: Path, me: dict, path, what: str) -> None:
    """Create ``lease`` naming ``me``, whole or not at all: written aside, then linked into place (a link fails where
    the name exists), so a rival never reads a half-written lease and takes it for a stale one (audit 87: six
    claimants at once, up to four holders)."""
    remove_stale_temporaries(lease)  # a claimant killed between writing its lease aside and linking it
    mine = temporary_name(lease, os.getpid())
    mine.write_text(json.dumps(me))
    try:
        for _ in range(3):  # a stale lease removed may be taken by another claimant in between
            try:
                os.link(mine, lease)
                return
            except FileExistsError:
                pass
            except OSError:  # no hard links on this file system (FAT, some FUSE mounts): created, then written
                if _create_exclusive(lease, me):
                    return
            holder = _read_holder(lease)
            if holder is None and _age_s(lease) < FRESH_LEASE_S:  # being written where it could not be linked
                raise AlreadyRunning(f"{path}: {what} is starting in another process ({lease} was just created)")
            runs = _holder_runs(holder) if holder is not None else False  # unreadable and old: no amcore lease
            if runs is not False:
                raise AlreadyRunning(_refusal(path, lease, holder, what, runs))
            _remove_stale(lease, holder)
        raise AlreadyRunning(f"{path}: {what} could not take its lease {lease}: other processes kept taking it")
    finally:
        mine.unlink(missing_ok=True)


FRESH_LEASE_S = 10.0  # a lease that cannot be read yet is being written for this long at most


def _create_exclusive(lease: Path, me: dict) -> bool:
    try:
        fd = os.open(lease, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as out:
        json.dump(me, out)
    return True


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return math.inf


def _remove_stale(lease: Path, holder: dict | None) -> None:
    """Remove ``lease``, judged stale as ``holder``'s; one that a live claimant put there meanwhile goes back."""
    grave = lease.with_name(f".{lease.name}.stale-{os.getpid()}")
    try:
        os.replace(lease, grave)  # atomic: what was moved is this process's to look at
    except FileNotFoundError:
        return
    if _read_holder(grave) != holder:
        with contextlib.suppress(OSError):  # FileExistsError, or no hard links here
            os.link(grave, lease)
    grave.unlink(missing_ok=True)


LIVE_SLURM_STATES = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING",
                     "SIGNALING", "STAGE_OUT", "STOPPED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD")  # fmt: skip


def _holder() -> dict:
    """Who this process is, in terms another process (maybe on another host) can check."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _process_stat(pid)[1],
            "slurm_job": os.environ.get("SLURM_JOB_ID"), "slurm_restart": os.environ.get("SLURM_RESTART_COUNT", "0"),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}  # fmt: skip


def _read_holder(lease: Path) -> dict | None:
    try:
        holder = json.loads(lease.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _process_stat(pid: int) -> tuple[str | None, str | None]:
    """The process ``pid``'s state letter (``Z`` for a zombie) and when it started in this boot (Linux), so that a PID
    reused after the holder died is not taken for it; Nones where ``/proc`` cannot say."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # the name may hold spaces
    except OSError:
        return None, None
    return fields[0], f"{boot}:{fields[19]}"  # fields 3 and 22 of proc(5)


def _holder_runs(holder: dict) -> bool | None:
    """Whether the lease's holder still runs: by PID and start time on this host, by ``squeue`` for a SLURM job
    elsewhere; None where nothing here can tell."""
    if holder.get("host") == socket.gethostname():
        pid = holder.get("pid")
        if not isinstance(pid, int) or not _running(pid):
            return False
        state, started = _process_stat(pid)
        if state == "Z":
            return False  # exited, not yet reaped by its parent
        return holder.get("start") is None or started in (None, holder["start"])
    job = holder.get("slurm_job")
    if not job:
        return None
    if job == os.environ.get("SLURM_JOB_ID"):
        # this job requeued (its earlier run is over), or another node of this job's allocation (cannot tell)
        before, now = str(holder.get("slurm_restart", "0")), os.environ.get("SLURM_RESTART_COUNT", "0")
        return False if before.isdigit() and now.isdigit() and int(now) > int(before) else None
    if not shutil.which("squeue"):
        return None
    try:
        asked = subprocess.run(["squeue", "--noheader", "--jobs", str(job), "--format", "%T"], capture_output=True,
                               text=True, timeout=60)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if asked.returncode != 0:
        return False if "invalid job id" in asked.stderr.lower() else None
    return asked.stdout.strip() in LIVE_SLURM_STATES


def _refusal(path, lease: Path, holder: dict, what: str, runs: bool | None) -> str:
    pid, job, host = holder.get("pid"), holder.get("slurm_job"), holder.get("host")
    since = f", since {holder['since']}" if holder.get("since") else ""
    if host == socket.gethostname() and pid == os.getpid():
        return (f"{path}: {what} is already running in this process (another thread, or a callback that trains the "
                "same checkpoint): train one checkpoint at a time")  # fmt: skip
    if runs is None:
        slurm = f", SLURM job {job}" if job else ""
        return (f"{path}: {what} holds {lease} (process {pid} on host {host}{slurm}{since}), and nothing here can "
                "check whether it still runs: if it does, wait for it or stop it there; if it does not, delete "
                f"{lease} and rerun")  # fmt: skip
    who, stop = (f"SLURM job {job}", f"scancel {job}") if job else (f"process {pid}", f"kill {pid}")
    return (f"{path}: {what} is already running ({who} on host {host}{since}); a Snakemake stopped with kill -9 "
            f"leaves its jobs running. Wait for it to end, or stop it with `{stop}` (a stopped training keeps its "
            "resumable state), then rerun")  # fmt: skip


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
