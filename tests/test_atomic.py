"""Outputs appear whole or not at all (amcore.atomic)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from amcore.atomic import remove_stale_temporaries, replacing


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
