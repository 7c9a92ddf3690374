"""`amcore train`'s settings and resumable state: a mistake in either is a clear InputError, never a traceback."""

from __future__ import annotations

import json
import math
import re
import subprocess

import pytest
from conftest import BIN, cli_env

from amcore import TrainConfig, train
from amcore.data.simulate import GaussianPath, simulate_snapshots
from amcore.data.store import Snapshots, write_store
from amcore.errors import InputError
from amcore.training.train import partial_path

TINY = {"steps": 20, "batch_size": 32, "width": 8, "depth": 1, "log_every": 10, "threads": 1}


def _snaps(seed: int = 0) -> Snapshots:
    x, t = simulate_snapshots(GaussianPath(), [0.0, 1.0], 100, seed=seed)
    return Snapshots.from_labels(x, t)


# --- 1. unknown keys ----------------------------------------------------------------------------------------------


def test_a_typo_d_setting_names_the_key_and_the_setting_meant():
    """`--params '{"stpes": 50}'` raised TrainConfig.__init__'s TypeError, which names no setting to use."""
    with pytest.raises(InputError, match=r"^unknown training setting 'stpes' \(did you mean 'steps'\?\)$"):
        TrainConfig.from_params({"stpes": 50, "lr": 1e-3})
    with pytest.raises(InputError, match=r"settings 'widht' \(did you mean 'width'\?\), 'zzz'$"):
        TrainConfig.from_params({"widht": 8, "zzz": 1})
    assert TrainConfig.from_params(TINY) == TrainConfig(**TINY)


# --- 2. types and ranges ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"steps": "20"}, "steps must be an integer >= 1, got '20' (a str)"),
     ({"steps": True}, "steps must be an integer >= 1, got True (a bool)"),
     ({"steps": 20.0}, "steps must be an integer >= 1, got 20.0 (a float)"),
     ({"steps": 0}, "steps must be an integer >= 1, got 0"),
     ({"batch_size": 1}, "batch_size must be an integer >= 2, got 1"),
     ({"width": 0}, "width must be an integer >= 1, got 0"),
     ({"depth": 0}, "depth must be an integer >= 1, got 0"),
     ({"lr": 0}, "lr must be a number > 0, got 0"),
     ({"lr": math.nan}, "lr must be a number > 0, got nan"),
     ({"lr": "1e-3"}, "lr must be a number > 0, got '1e-3' (a str)"),
     ({"warmup_steps": "5"}, "warmup_steps must be an integer >= 0, got '5' (a str)"),
     ({"ema_decay": 1.5}, "ema_decay must be a number in [0, 1], got 1.5"),
     ({"objective": "eam", "sigma": "0.5"}, "sigma must be a number >= 0, got '0.5' (a str)"),
     ({"ot_max_size": 1}, "ot_max_size must be an integer >= 2, got 1"),
     ({"entropic_reg": 0}, "entropic_reg must be a number > 0 or null, got 0"),
     ({"checkpoint_every": 0}, "checkpoint_every must be an integer >= 1, got 0"),
     ({"in_memory_max_mb": -1}, "in_memory_max_mb must be a number > 0, got -1"),
     ({"tension": 2}, "tension must be 'auto' or a number in [0, 1], got 2"),
     ({"time_periods": [0]}, "time_periods must be a list of numbers > 0, got [0]"),
     ({"fused": "false"}, "fused must be true or false, got 'false'")],
)  # fmt: skip
def test_a_setting_of_the_wrong_type_or_outside_its_domain_is_refused(settings, message):
    """They got past the config and failed deep in training (TypeError, steps 0's IndexError after an untrained
    checkpoint was written) or trained without a word (width 0: a constant network, loss 0, exit 0)."""
    with pytest.raises(InputError) as refused:
        TrainConfig(**settings)
    assert str(refused.value) == message


def test_floats_accept_integers_and_the_schema_s_edges():
    """The schema's domains, not stricter ones: its edges pass, and just beyond them is refused."""
    TrainConfig(lr=1, lr_final=0, ema_decay=1, grad_clip=1, divergence_factor=0, streams=0, seed=-1)
    TrainConfig(interpolation="spline", tension=0, batch_size=2, time_frequencies=0, time_periods=(90.478,))
    TrainConfig(objective="fm", implementation="torchcfm", torchcfm_sigma=0, entropic_reg=None)
    with pytest.raises(InputError, match="lr_final must be a number >= 0, got -1e-05"):
        TrainConfig(lr_final=-1e-5)


def test_numpy_numbers_in_settings_give_a_model_that_loads(tmp_path):
    """Audit 92: eAM's sigma as the docs' sqrt(2 D) (a np.float64) trained to the end, and the checkpoint it left
    could not be loaded (numpy's types are refused by weights_only). Settings keep Python's own numbers."""
    import numpy as np

    from amcore import load

    cfg = TrainConfig(objective="eam", sigma=np.sqrt(2 * 0.02), lr=np.float32(1e-3), **TINY | {"steps": np.int64(20)})
    assert (type(cfg.sigma), type(cfg.lr), type(cfg.steps)) == (float, float, int)
    train(_snaps(), cfg, tmp_path / "m.pt")
    assert load(tmp_path / "m.pt").sigma(0.5) == pytest.approx(0.2)


def test_a_wrong_type_through_the_cli_exits_2_before_anything_is_written(tmp_path):
    """`amcore train --params '{"width": 0}'` trained a degenerate network and exited 0."""
    store = tmp_path / "store.zarr"
    write_store(store, _snaps())
    command = [str(BIN / "amcore"), "train", "--store", str(store), "--params", json.dumps({**TINY, "width": 0}),
               "--checkpoint", str(tmp_path / "m.pt"), "--loss-csv", str(tmp_path / "loss.csv")]  # fmt: skip
    done = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "amcore train: error: width must be an integer >= 1, got 0" in done.stderr
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "loss.csv").exists()


# --- 3. a damaged resumable state ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kept", [0.5, 0.0], ids=["truncated", "empty"])
def test_a_damaged_partial_checkpoint_is_named_and_kept(tmp_path, kept):
    """torch.load's error named no file, and every rerun failed on it the same way without saying what to do."""
    cfg = TrainConfig(**TINY)
    train(_snaps(), cfg, tmp_path / "a.pt", tmp_path / "a.csv")
    blob = (tmp_path / "a.pt").read_bytes()
    partial = partial_path(tmp_path / "b.pt")
    partial.write_bytes(blob[: int(len(blob) * kept)])
    with pytest.raises(InputError) as refused:
        train(_snaps(), cfg, tmp_path / "b.pt", tmp_path / "b.csv")
    message = str(refused.value)
    assert message.startswith(f"{partial}: the resumable state of an interrupted training cannot be read")
    assert "truncated or damaged" in message and "delete it to start the training over" in message
    assert partial.read_bytes() == blob[: int(len(blob) * kept)], "the user decides whether to delete it"
    assert not (tmp_path / "b.pt").exists()


def test_a_setting_the_chosen_model_never_reads_is_refused():
    """growth without uam (a user who meant uam would train balanced AM in silence), a tension without splines, a
    TorchCFM sigma for amcore's own Flow Matching."""
    for settings, message in (
        ({"growth": 5.0}, "growth (got 5.0) is read only with objective 'uam'"),
        ({"tension": 0.3}, "tension (got 0.3) is read only with interpolation 'spline'"),
        ({"objective": "fm", "torchcfm_sigma": 0.5}, "torchcfm_sigma (got 0.5) is read only with implementation"),
        # audit 16: a head on Flow Matching's field, eAM's Laplacian settings elsewhere, entropic settings on OT pairs
        ({"objective": "fm", "head": "quadratic"}, "head (got 'quadratic') is read only with objective 'am', 'eam'"),
        ({"laplacian": "exact"}, "laplacian (got 'exact') is read only with objective 'eam'"),
        ({"objective": "uam", "probes": 4}, "probes (got 4) is read only with objective 'eam'"),
        ({"exact_trace_max_dim": 8}, "exact_trace_max_dim (got 8) is read only with objective 'eam'"),
        ({"entropic_reg": 0.1}, "entropic_reg (got 0.1) is read only with coupling 'entropic'"),
        ({"coupling": "independent", "entropic_draws": 4}, "entropic_draws (got 4) is read only with coupling"),
        # audit 29: the message named the coupling set as the one missing; nearest frames read no coupling at all
        (
            {"coupling": "entropic", "interpolation": "nearest", "entropic_reg": 0.1},
            "coupling (got 'entropic') is read only with interpolation 'linear' (nearest frames pair nothing)",
        ),
        ({"objective": "fm", "time_weight": "linear"}, "time_weight (got 'linear') is read only with objective 'am'"),
        ({"objective": "fm", "fused": False}, "fused (got False) is read only with objective 'am'"),
        ({"objective": "fm", "implementation": "torchcfm", "time_sampling": "uniform"}, "time_sampling (got"),
        # audit 29: compile on Flow Matching, a validation cadence without validation cells, a Laplacian setting
        # the chosen Laplacian never reads: each passed and did nothing; compile without the fused loss and
        # splines without OT pairs failed only in train, after prepare
        ({"objective": "fm", "compile": True}, "compile (got True) is read only with objective 'am', 'eam' or 'uam'"),
        ({"validate_every": 10}, "validate_every (got 10) is read only with validation > 0"),
        (
            {"objective": "eam", "sigma": 0.5, "laplacian": "exact", "probes": 4},
            "probes (got 4) is read only with laplacian 'auto' or 'hutchinson'",
        ),
        (
            {"objective": "eam", "sigma": 0.5, "laplacian": "hutchinson", "exact_trace_max_dim": 8},
            "exact_trace_max_dim (got 8) is read only with laplacian 'auto'",
        ),
        ({"compile": True, "fused": False}, "compile (got True) compiles the fused loss: it needs fused true"),
        (
            {"interpolation": "spline", "coupling": "entropic", "entropic_reg": 0.1},
            "interpolation 'spline' chains exact OT plans: it needs coupling 'ot', not 'entropic'",
        ),
    ):
        with pytest.raises(InputError, match=re.escape(message)):
            TrainConfig(**settings)
    TrainConfig(objective="uam", growth=5.0)
    TrainConfig(objective="eam", sigma=0.5, laplacian="hutchinson", probes=4)
    TrainConfig(objective="eam", sigma=0.5, probes=4, exact_trace_max_dim=8)  # auto reads both
    TrainConfig(validation=0.1, validate_every=10)
    TrainConfig(coupling="entropic", entropic_reg=0.1, entropic_draws=4, head="inner")


def test_streams_that_do_not_share_out_name_the_half_that_fails():
    """Audit 65: three processes beside batch_size 128 read "must be a multiple of the 3 training processes and
    divide batch_size", the first half already true."""
    for settings, world, message in (
        ({"batch_size": 128}, 3, "streams (3, one per process) does not divide batch_size (128):"),
        ({"batch_size": 128, "streams": 3}, 2, "is not a multiple of the 2 training processes and does not divide"),
        ({"batch_size": 120, "streams": 3}, 2, "streams (3) is not a multiple of the 2 training processes:"),
    ):
        with pytest.raises(InputError, match=re.escape(message)):
            TrainConfig(**settings).streams_of(world)
    assert TrainConfig(batch_size=120, streams=6).streams_of(2) == 6
