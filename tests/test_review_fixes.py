"""Review fixes of issue 14: one sigma_t schedule for eAM's path, loss and SDE; growth > 0 for uAM; sigma refused
where nothing uses it; no promise of per-cell mass weights that no reader produces."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT
from snakemake.utils import validate

from amcore import Snapshots, TrainConfig, train
from amcore.data.simulate import OrnsteinUhlenbeck, simulate_snapshots
from amcore.errors import InputError
from amcore.paths.interpolants import NoiseSchedule, SnapshotPath
from amcore.training import train as training_loop

SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")


def schema_refuses(model: dict) -> str | None:
    """The schema's message for a config with this one model, or None when it is accepted."""
    try:
        validate({"dataset": {"source": "simulate"}, "models": {"m": model}}, SCHEMA)
    except Exception as err:  # snakemake wraps jsonschema's ValidationError in a WorkflowError
        return str(err)
    return None


# --- 1. eAM: the path's Brownian bridge and entropic reg follow the loss's sigma_t schedule -------------------


@pytest.fixture
def built_paths(monkeypatch) -> list[SnapshotPath]:
    """Every SnapshotPath that training builds, in order."""
    built: list[SnapshotPath] = []

    class Recording(SnapshotPath):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(training_loop, "SnapshotPath", Recording)
    return built


def test_training_builds_its_path_with_the_loss_schedule(tmp_path, built_paths):
    """train's snapshot_path hands sigma and sigma_final to the path: bridge and entropic reg use sigma_t, not the
    constant sigma (before: sigma only, so with sigma_final 0.2 the reg of [0.5, 1] was 2 * 1.0 * 0.5 = 1 instead
    of 2 V = 0.37)."""
    x, t = simulate_snapshots(OrnsteinUhlenbeck(sigma=1.0), [0.0, 0.5, 1.0], 40, seed=0)
    cfg = TrainConfig(objective="eam", sigma=1.0, sigma_final=0.2, coupling="entropic", entropic_draws=2, steps=2,
                      batch_size=16, width=8, depth=1, log_every=1, divergence_factor=0)  # fmt: skip
    train(Snapshots.from_labels(x, t), cfg, tmp_path / "m.pt", tmp_path / "loss.csv")
    (path,) = built_paths
    assert path.noise == NoiseSchedule(1.0, 0.2) == cfg.spec().noise
    u = torch.linspace(0, 1, 5)
    torch.testing.assert_close(path.noise.at(u), cfg.spec().sigma_at(u))  # the loss's sigma_t
    # sigma_t = 1 - 0.8 u on [0, 1]: V(0, .5) = .5 (1 + .6 + .36) / 3, V(.5, 1) = .5 (.36 + .12 + .04) / 3.
    np.testing.assert_allclose(path.entropic_regs, [2 * 0.5 * 1.96 / 3, 2 * 0.5 * 0.52 / 3], rtol=1e-6)


def test_plain_am_and_fm_paths_carry_no_noise(tmp_path, built_paths):
    x, t = simulate_snapshots(OrnsteinUhlenbeck(sigma=1.0), [0.0, 0.5, 1.0], 40, seed=0)
    for objective in ("am", "fm"):
        cfg = TrainConfig(objective=objective, steps=1, batch_size=16, width=8, depth=1, log_every=1)
        train(Snapshots.from_labels(x, t), cfg, tmp_path / f"{objective}.pt", tmp_path / f"{objective}.csv")
    assert [p.noise.active for p in built_paths] == [False, False]


# --- 2. uAM: growth <= 0 makes the loss unbounded below -----------------------------------------------------


@pytest.mark.parametrize("growth", [0.0, -0.5, math.nan])
def test_nonpositive_growth_is_refused_by_the_library(growth):
    with pytest.raises(ValueError, match=r"growth must be > 0.*unbounded below"):
        TrainConfig(objective="uam", growth=growth)


@pytest.mark.parametrize("growth", [0, -1.5])
def test_nonpositive_growth_is_refused_by_the_schema(growth):
    message = schema_refuses({"objective": "uam", "growth": growth})
    assert message is not None and "growth" in message and "less than or equal to the minimum of 0" in message
    assert schema_refuses({"objective": "uam", "growth": 0.5}) is None
    assert schema_refuses({"objective": "uam", "growth": "auto"}) is None
    assert "'fast' does not match '^auto$'" in schema_refuses({"objective": "uam", "growth": "fast"})


# --- 3. per-cell mass weights: not promised, since no reader produces them ------------------------------------


def test_readme_promises_no_per_cell_mass_weights():
    """No reader reads a weight column and sampling, couplings and boundary terms use the counts: the docs say
    the mass is the number of cells (before: "mass = counts, or `mass` weights")."""
    readme = "\n".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    assert "`mass` weights" not in readme
    uam = next(line for line in readme.splitlines() if line.strip().startswith("| `uam` |"))
    assert "mass = the number of cells at each time" in uam
    schema = yaml.safe_load(Path(SCHEMA).read_text())
    assert not any("mass" in key or "weight" in key for key in schema["properties"]["dataset"]["properties"])


# --- 4. sigma on a model that has no diffusion --------------------------------------------------------------


@pytest.mark.parametrize("objective", ["am", "uam", "fm"])
@pytest.mark.parametrize("setting", [{"sigma": 0.5}, {"sigma_final": 0.2}, {"sigma": 0.5, "sigma_final": 0.1}])
def test_sigma_without_eam_is_refused(objective, setting):
    with pytest.raises(ValueError, match=rf"sigma / sigma_final .* objective '{objective}' has none"):
        TrainConfig(objective=objective, **setting)
    message = schema_refuses({"objective": objective, **setting})
    assert message is not None and ("sigma" in message)


def test_sigma_is_accepted_where_it_means_something():
    TrainConfig(objective="eam", sigma=0.5, sigma_final=0.1)
    TrainConfig(objective="am", sigma=0.0)  # the default, as the benchmarks spell it
    assert schema_refuses({"objective": "eam", "sigma": 0.5, "sigma_final": 0.1}) is None
    assert schema_refuses({"objective": "am"}) is None
    with pytest.raises(ValueError, match="sigma_final must be >= 0"):
        TrainConfig(objective="eam", sigma=0.5, sigma_final=-0.1)


def test_torchcfm_sigma_is_refused_before_any_job_without_the_torchcfm_implementation():
    """Train refused it only once the job ran; the schema now does, as it does every setting one path reads."""
    message = schema_refuses({"objective": "fm", "torchcfm_sigma": 0.2})
    assert message is not None and "torchcfm_sigma" in message
    assert schema_refuses({"objective": "fm", "implementation": "torchcfm", "torchcfm_sigma": 0.2}) is None


@pytest.mark.parametrize(
    ("model", "setting"),
    [({"objective": "fm"}, {"head": "quadratic"}), ({"objective": "am"}, {"laplacian": "exact"}),
     ({"objective": "uam"}, {"probes": 4}), ({"objective": "am"}, {"exact_trace_max_dim": 8}),
     ({"objective": "am"}, {"entropic_reg": 0.1}), ({"objective": "am", "coupling": "ot"}, {"entropic_draws": 4})],
)  # fmt: skip
def test_settings_one_model_reads_are_refused_elsewhere_before_any_job(model, setting):
    """Audit 16: TrainConfig took them in silence (an entropic_reg on OT pairs read as an entropic coupling)."""
    message = schema_refuses({**model, **setting})
    assert message is not None and next(iter(setting)) in message
    with pytest.raises(InputError, match="is read only with"):
        TrainConfig(**model, **setting)
    where = {
        "head": {"objective": "am"},
        "entropic_reg": {"coupling": "entropic"},
        "entropic_draws": {"coupling": "entropic"},
    }.get(next(iter(setting)), {"objective": "eam", "sigma": 0.5})
    assert schema_refuses({**model, **where, **setting}) is None


@pytest.mark.parametrize("config", sorted((ROOT / "config").rglob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_pass_the_new_checks(config):
    """Every shipped model validates and builds its TrainConfig (no sigma on am/uam/fm, no growth <= 0); an
    overlay (eb_velocity.yaml) laid over its base as Snakemake merges them, nested keys key by key."""
    loaded = yaml.safe_load(config.read_text())
    base = {"eb_velocity.yaml": "eb.yaml"}.get(config.name)
    if base:
        merged = yaml.safe_load((config.parent / base).read_text())
        for key, value in loaded.items():
            merged[key] = {**merged[key], **value} if isinstance(value, dict) else value
        loaded = merged
    validate(loaded, SCHEMA)
    for params in loaded["models"].values():
        TrainConfig(**params)
