"""Prepare throughput against ``numpy.save`` of the same array on the same disk, and the memory it takes.

Writes a synthetic raw ``.npy`` dataset (default 20 M x 50 float32, 4 GB, at 10 time points) in bounded
memory, times ``numpy.save`` of that array to the same folder, then runs the real ``amcore prepare`` on it
in a child process (its wall time and peak RSS; both timings start with no dirty pages and end with
``sync``, so each pays for getting its own bytes onto the disk), then ``amcore train`` on the resulting
store for a few steps (seconds until the first step, peak RSS; a store over ``in_memory_max_mb`` streams).
Deletes its files.

    python benchmarks/prepare.py [--rows 20000000] [--dim 50] [--times 10] [--dir /tmp]

The last line reads ``ratio=<x> peak_rss_gb=<y>``: prepare throughput / ``numpy.save`` throughput, and the
larger peak RSS of the prepare and the training processes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GENERATE_ROWS = 2**20  # rows generated per block: 200 MB at d = 50


def generate(folder: Path, rows: int, dim: int, times: int) -> None:
    """``X.npy`` (a drifting Gaussian, sorted by time) and ``t.npy``, written block by block."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(times, dtype=np.float32), -(-rows // times))[:rows]
    np.save(folder / "t.npy", labels)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": (rows, dim)}
    with open(folder / "X.npy", "wb") as handle:
        np.lib.format.write_array_header_2_0(handle, header)
        for start in range(0, rows, GENERATE_ROWS):
            stop = min(rows, start + GENERATE_ROWS)
            block = rng.standard_normal((stop - start, dim), dtype=np.float32)
            block += labels[start:stop, None] * np.linspace(0.1, 1.0, dim, dtype=np.float32)
            handle.write(block.tobytes())


# A child's ru_maxrss starts at the RSS of the process that spawned it: start children from a tiny launcher, so
# the figure is the child's own and not this process's (which maps the 4 GB array for numpy.save).
LAUNCHER = """import os, sys
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)
status, usage = os.wait4(pid, 0)[1:]
print(f"maxrss_kb={usage.ru_maxrss}", file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_child(cmd: list[str], marker: str | None = None) -> tuple[float, float | None, float]:
    """Wall seconds, seconds until a stderr line starts with ``marker``, and peak RSS (GB) of a child."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, *cmd], stderr=subprocess.PIPE, text=True)
    seen, tail, maxrss_kb = None, [], None
    for line in proc.stderr:
        if line.startswith("maxrss_kb="):
            maxrss_kb = int(line.split("=")[1])
            continue
        tail = (tail + [line])[-30:]
        if seen is None and marker and line.startswith(marker):
            seen = time.perf_counter() - start
        print(f"  | {line}", end="", file=sys.stderr)
    if proc.wait():
        raise SystemExit(f"{cmd[3]} failed with exit code {proc.returncode}:\n{''.join(tail)}")
    return time.perf_counter() - start, seen, maxrss_kb / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--dim", type=int, default=50)
    parser.add_argument("--times", type=int, default=10)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the files go (needs ~3x the array)")
    parser.add_argument("--train-steps", type=int, default=20)
    args = parser.parse_args()
    nbytes = args.rows * args.dim * 4
    free = shutil.disk_usage(args.dir).free
    if free < 3.2 * nbytes:
        raise SystemExit(f"{args.dir}: {free / 1e9:.1f} GB free, need {3.2 * nbytes / 1e9:.1f} GB; pass --dir")
    work = Path(tempfile.mkdtemp(prefix="amcore-prepare-bench-", dir=args.dir))
    amcore = [sys.executable, "-m", "amcore"]
    try:
        raw = work / "raw"
        raw.mkdir()
        t = time.perf_counter()
        generate(raw, args.rows, args.dim, args.times)
        print(f"generated {args.rows} x {args.dim} float32 ({nbytes / 1e9:.2f} GB) in {time.perf_counter() - t:.1f}s")

        # Each timing starts with no dirty pages and ends when its data is on disk: otherwise whichever runs
        # first writes into the page cache and the next one pays for flushing it.
        os.sync()
        t = time.perf_counter()
        np.save(work / "copy.npy", np.load(raw / "X.npy", mmap_mode="r"))
        os.sync()
        save_s = time.perf_counter() - t
        (work / "copy.npy").unlink()
        os.sync()
        print(f"numpy.save: {save_s:.1f}s, {nbytes / 1e9 / save_s:.2f} GB/s")

        dataset = {"source": "npy", "path": str(raw)}
        store = work / "store.zarr"
        prepare_cmd = [*amcore, "prepare", "--dataset", json.dumps(dataset), "--out", str(store)]
        prepare_cmd += ["--summary", str(work / "summary.json")]
        t = time.perf_counter()
        _, _, prepare_rss = run_child(prepare_cmd)
        os.sync()
        prepare_s = time.perf_counter() - t
        print(f"amcore prepare: {prepare_s:.1f}s, {nbytes / 1e9 / prepare_s:.2f} GB/s, peak RSS {prepare_rss:.2f} GB")

        params = {"steps": args.train_steps, "log_every": 1, "batch_size": 512, "ot_max_size": 1000, "threads": 1}
        train_cmd = [*amcore, "train", "--store", str(store), "--params", json.dumps(params)]
        train_cmd += ["--checkpoint", str(work / "model.pt"), "--loss-csv", str(work / "loss.csv")]
        train_s, first_s, train_rss = run_child(train_cmd, marker="step 1/")
        print(
            f"amcore train ({json.dumps(params)}): first step after {first_s:.1f}s, {args.train_steps} steps in "
            f"{train_s:.1f}s, peak RSS {train_rss:.2f} GB"
        )
        print(f"ratio={save_s / prepare_s:.3f} peak_rss_gb={max(prepare_rss, train_rss):.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
