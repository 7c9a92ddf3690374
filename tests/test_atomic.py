"""Outputs appear whole or not at all (amcore.atomic)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amcore.atomic import _process_stat, lease_path, leased, remove_stale_temporaries, replacing
from amcore.errors import AlreadyRunning


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), replacing(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_directory_replaces_the_previous_one_and_the_suffix_survives(tmp_path):
    target = tmp_path / "store.zarr"
    target.mkdir()
    (target / "zarr.json").write_text("{}")  # an earlier store
    with replacing(target) as tmp:
        assert tmp.suffix == ".zarr" and tmp.parent == tmp_path
        tmp.mkdir()
        (tmp / "fresh").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["fresh"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.zarr"]


def test_a_folder_amcore_did_not_write_is_never_deleted_to_make_room(tmp_path):
    """An output path that names a folder of someone's files is refused before anything is written; an earlier
    zarr store is not replaced by a file either; an empty folder is."""
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("a month of work")
    with pytest.raises(FileExistsError, match="not a zarr store"), replacing(precious) as tmp:
        tmp.write_text("an AnnData file")
    assert (precious / "notes.txt").read_text() == "a month of work"
    store = tmp_path / "store.zarr"
    store.mkdir()
    (store / ".zgroup").write_text("{}")
    with pytest.raises(FileExistsError, match="is a zarr store"), replacing(store) as tmp:
        tmp.write_text("a file")
    assert (store / ".zgroup").exists()
    empty = tmp_path / "empty.json"
    empty.mkdir()
    with replacing(empty) as tmp:
        tmp.write_text("{}")
    assert empty.read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.json", "precious", "store.zarr"]


def dead_pid() -> int:
    """The PID of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    """A job killed outright leaves its temporary; the rerun (another PID) removes it before writing."""
    dead, live = dead_pid(), os.getppid()
    stale = tmp_path / f".store.tmp-{dead}.zarr"
    stale.mkdir()
    (stale / "chunk").write_bytes(b"half")
    stale_file = tmp_path / f".summary.tmp-{dead}.json"
    stale_file.write_text("{")
    running = tmp_path / f".store.tmp-{live}.zarr"
    running.mkdir()
    others = [
        tmp_path / f".store.tmp-{dead}.json",
        tmp_path / f".store2.tmp-{dead}.zarr",
        tmp_path / "store.tmp-1.zarr",
    ]
    for other in others:  # temporaries of other outputs, and a file that only looks like one
        other.write_text("keep")
    with replacing(tmp_path / "store.zarr") as tmp:
        assert not stale.exists(), "the dead writer's temporary is removed before writing"
        tmp.mkdir()
    with replacing(tmp_path / "summary.json") as tmp:
        tmp.write_text("{}")
    assert not stale_file.exists()
    assert running.is_dir() and (tmp_path / "store.zarr").is_dir()
    assert all(other.read_text() == "keep" for other in others)
    assert remove_stale_temporaries(tmp_path / "missing" / "store.zarr") == []


def test_a_killed_writer_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target, started = tmp_path / "data" / "store.zarr", tmp_path / "started"
    target.parent.mkdir()
    code = (
        "import sys, time; from pathlib import Path; from amcore.atomic import replacing\n"
        "with replacing(sys.argv[1]) as tmp:\n"
        "    tmp.mkdir(); (tmp / 'chunk').write_bytes(b'x'); Path(sys.argv[2]).touch(); time.sleep(120)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code, str(target), str(started)])
    deadline = time.monotonic() + 60
    while not started.exists():
        assert writer.poll() is None and time.monotonic() < deadline, "the writer did not start"
        time.sleep(0.05)
    writer.send_signal(signal.SIGKILL)  # as Snakemake's kill of a job's process group, or the OOM killer
    writer.wait()
    assert [p.name for p in target.parent.iterdir()] == [f".store.tmp-{writer.pid}.zarr"]
    with replacing(target) as tmp:
        tmp.mkdir()
    assert [p.name for p in target.parent.iterdir()] == ["store.zarr"]


HOLD = (
    "import sys, time; from amcore.atomic import leased\n"
    "with leased(sys.argv[1], 'a training of this model'):\n"
    "    print('held', flush=True); time.sleep(300)\n"
)


def holding(path: Path) -> subprocess.Popen:
    """A real process that holds the lease on ``path`` until it is killed."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n", "the holder did not take its lease"
    return holder


def holder_pid(path: Path) -> int:
    return json.loads(lease_path(path).read_text())["pid"]


def test_a_lease_refuses_a_second_writer_while_the_first_runs_and_passes_on_after_kill_9(tmp_path):
    """After kill -9 of Snakemake its training runs on, and the rerun's training resumed from the same state beside
    it. The second writer is refused, naming the first and how to stop it; once the first is dead (kill -9 leaves
    its lease behind) the next writer takes the lease over and removes it when done."""
    target = tmp_path / "model.pt"
    holder = holding(target)
    try:
        said = rf"already running \(process {holder.pid} on host {socket.gethostname()}, since .*`kill {holder.pid}`"
        with pytest.raises(AlreadyRunning, match=said):
            with leased(target, "a training of this model"):
                pass
        assert holder_pid(target) == holder.pid, "the refused writer leaves the holder's lease alone"
    finally:
        holder.kill()
        holder.wait()
    assert holder_pid(target) == holder.pid, "kill -9 leaves the lease behind"
    with leased(target, "a training of this model"):
        assert holder_pid(target) == os.getpid()
    assert not lease_path(target).exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="start times come from /proc")
def test_a_lease_whose_pid_now_runs_another_process_or_a_zombie_is_taken_over(tmp_path):
    target = tmp_path / "model.pt"
    reused = {"host": socket.gethostname(), "pid": os.getppid(), "start": "an-earlier-boot:1"}  # runs, but not it
    lease_path(target).write_text(json.dumps(reused))
    with leased(target, "a training of this model"):
        assert holder_pid(target) == os.getpid()
    exited = subprocess.Popen([sys.executable, "-c", ""])  # never waited for: a zombie once it exits
    deadline = time.monotonic() + 30
    while _process_stat(exited.pid)[0] != "Z":
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.05)
    zombie = {"host": socket.gethostname(), "pid": exited.pid, "start": _process_stat(exited.pid)[1]}
    lease_path(target).write_text(json.dumps(zombie))  # audit 87: refused, naming a process that `kill` cannot end
    with leased(target, "a training of this model"):
        assert holder_pid(target) == os.getpid()
    exited.wait()


def test_a_lease_from_another_host_is_kept_unless_slurm_says_its_job_is_over(tmp_path, monkeypatch):
    target, lease = tmp_path / "model.pt", lease_path(tmp_path / "model.pt")
    monkeypatch.setenv("PATH", str(tmp_path / "no-squeue"))  # nothing here can ask SLURM
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    for elsewhere in ({"host": "node-elsewhere", "pid": 4242, "since": "then"},
                      {"host": "node-elsewhere", "pid": 4242, "slurm_job": "77"}):  # fmt: skip
        lease.write_text(json.dumps(elsewhere))
        with pytest.raises(AlreadyRunning, match=rf"process 4242 on host node-elsewhere.*delete {lease} and rerun"):
            with leased(target, "a training of this model"):
                pass
        assert json.loads(lease.read_text()) == elsewhere
    monkeypatch.setenv("SLURM_JOB_ID", "77")  # the same job: another node of its allocation may be running it
    with pytest.raises(AlreadyRunning, match="nothing here can check"):
        with leased(target, "a training of this model"):
            pass
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the holder's own job, requeued after its node failed: it is over
    with leased(target, "a training of this model"):
        assert holder_pid(target) == os.getpid()


def test_a_lease_nobody_can_read_is_taken_over_and_only_ones_own_is_removed(tmp_path):
    target = tmp_path / "model.pt"
    lease_path(target).write_text("{")  # as written where no hard link can be made, and read before its JSON came
    with pytest.raises(AlreadyRunning, match="is starting in another process"):
        with leased(target, "a training of this model"):
            pass
    an_hour_ago = time.time() - 3600
    os.utime(lease_path(target), (an_hour_ago, an_hour_ago))  # and never finished: a lease of no amcore
    with leased(target, "a training of this model"):
        assert holder_pid(target) == os.getpid()
        other = {"host": "node-elsewhere", "pid": 1}  # taken over meanwhile by a process that judged this one gone
        lease_path(target).write_text(json.dumps(other))
    assert json.loads(lease_path(target).read_text()) == other


RACE = (
    "import sys, time; from amcore.atomic import leased; from amcore.errors import AlreadyRunning\n"
    "while time.time() < float(sys.argv[2]): pass\n"
    "try:\n"
    "    with leased(sys.argv[1], 'a training of this model'): print('held', flush=True); time.sleep(1.0)\n"
    "except AlreadyRunning: print('refused', flush=True)\n"
)


def test_claimants_starting_at_the_same_instant_get_one_lease(tmp_path):
    """Audit 87: a lease created empty and then written was read empty by a rival, taken for stale and replaced:
    six claimants at once gave up to four holders. Each round here has six; exactly one may hold it."""
    for round_ in range(3):
        target, start = tmp_path / f"model{round_}.pt", time.time() + 1.5  # every claimant started and waiting
        claimants = [subprocess.Popen([sys.executable, "-c", RACE, str(target), str(start)], stdout=subprocess.PIPE,
                                      text=True) for _ in range(6)]  # fmt: skip
        said = sorted(claimant.communicate(timeout=60)[0].strip() for claimant in claimants)
        assert said == ["held"] + ["refused"] * 5, f"round {round_}: {said}"
        assert not lease_path(target).exists()


def test_equal_checkpoints_are_equal_bytes(tmp_path):
    """torch named the archive's folder after the temporary file, whose name holds the process id: two runs
    that trained equal models wrote files of different hashes (audit 14)."""
    import torch

    from amcore.training.train import save_checkpoint

    payload = {"weights": torch.arange(6.0).reshape(2, 3), "step": 3}
    save_checkpoint(tmp_path / "a.pt", payload)
    (tmp_path / "b").mkdir()
    save_checkpoint(tmp_path / "b" / "model.pt", payload)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b" / "model.pt").read_bytes()
