"""The prepare stage: turn a dataset description from the config into a canonical snapshot store."""

from __future__ import annotations

import hashlib
from dataclasses import asdict

from amcore.readers import InputError, read_npz
from amcore.simulate import make_simulator, simulate_snapshots
from amcore.store import Snapshots


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_snapshots(spec: dict) -> Snapshots:
    """Simulate or read the dataset that ``spec`` (the config's ``dataset`` section) describes."""
    source = spec["source"]
    if source == "simulate":
        simulator = make_simulator(spec["simulator"], spec.get("params", {}))
        times = [float(t) for t in spec["times"]]
        x, t = simulate_snapshots(simulator, times, spec["n_per_time"], spec["seed"])
        provenance = {"source": "simulate", "simulator": spec["simulator"], "seed": spec["seed"]}
        truth = {"simulator": spec["simulator"], "params": asdict(simulator)}
        attrs = {"provenance": provenance, "ground_truth": truth}
    elif source == "npz":
        x, t = read_npz(spec["path"], spec.get("x_key", "X"), spec.get("t_key", "t"))
        if spec.get("features"):
            x = x[:, : spec["features"]]
        provenance = {
            "source": "npz",
            "path": spec["path"],
            "sha256": file_sha256(spec["path"]),
            "reader": {"x_key": spec.get("x_key", "X"), "t_key": spec.get("t_key", "t")},
        }
        attrs = {"provenance": provenance}
    else:
        raise InputError(f"dataset.source: unknown source {source!r}; expected 'simulate' or 'npz'")
    snaps = Snapshots.from_labels(x, t, attrs)
    if snaps.n_snapshots < 2:
        raise InputError(f"dataset: found {snaps.n_snapshots} time point(s); at least two are needed")
    snaps.attrs["holdout_times"] = []
    return snaps


def ground_truth(snaps: Snapshots):
    """The analytic simulator behind a store, or ``None`` for real data."""
    truth = snaps.attrs.get("ground_truth")
    return make_simulator(truth["simulator"], truth["params"]) if truth else None
