"""``head: auto``: the head chosen by the objective on held-apart training cells, never the held-out time."""

import numpy as np
import pytest
import torch
from test_inner_loo import snapshots

from amcore import Snapshots, TrainConfig, load, train
from amcore.errors import InputError
from amcore.training import choice
from amcore.training.train import partial_path

SMALL = {"steps": 40, "batch_size": 64, "width": 16, "depth": 2, "threads": 1, "log_every": 20}


def test_the_default_is_kept_unless_a_candidate_is_clearly_better():
    rng = np.random.default_rng(0)
    scalar = 5.0 + rng.normal(size=100)
    d = rng.normal(size=100)
    d -= d.mean()
    se = d.std(ddof=1) / 10  # of the paired difference's mean, over 100 draws
    one = {"scalar": scalar, "inner": scalar + d - se}
    assert choice.choose(one, "scalar")[0] == "scalar"  # one standard error better: not clear enough
    three = {"scalar": scalar, "inner": scalar + d - 3 * se}
    head, record = choice.choose(three, "scalar")
    assert head == "inner" and record["chosen"] == "inner"
    assert record["differences"]["inner"] == pytest.approx({"difference": -3 * se, "se": se})
    worse = {"scalar": scalar, "inner": scalar + d + 3 * se}
    assert choice.choose(worse, "scalar")[0] == "scalar"


@pytest.mark.parametrize("objective", [{"objective": "am"}, {"objective": "eam", "sigma": 0.3}, {"objective": "uam"}])
def test_the_held_out_cells_reach_no_choice_and_the_chosen_head_is_the_model(tmp_path, objective):
    """For AM, eAM and uAM alike: each objective is half the squared distance to its path's field plus a constant
    of the path, so each can choose (eAM and uAM were refused before; on far outlying cells uAM's rule took the
    inner head and held the data, docs/benchmarks.md)."""
    cfg = TrainConfig(head="auto", **objective, **SMALL)
    nan = train(snapshots(np.nan), cfg, tmp_path / "a.pt", tmp_path / "a.csv")
    huge = train(snapshots(1e6), cfg, tmp_path / "b.pt", tmp_path / "b.csv")
    keys = ("head", "head_objective_scalar", "head_objective_inner", "head_difference_se")
    assert all(np.isfinite(nan[k]) for k in keys[1:])
    assert {k: nan[k] for k in keys} == {k: huge[k] for k in keys}  # whatever the held-out time holds
    assert nan["head"] in ("scalar", "inner")
    model = load(tmp_path / "a.pt")
    assert model.network.head == nan["head"] == model.info["head_choice"]["head"]  # how it was chosen, kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.pt", "b.csv", "b.pt"]  # no candidate left


def test_resuming_keeps_the_choice_made_before_the_interruption(tmp_path, capsys):
    snaps = snapshots(np.nan)
    snaps.attrs["provenance"] = {"simulator": "test"}  # a prepared store's: the choice is tied to it
    cfg = TrainConfig(objective="am", head="auto", **{**SMALL, "steps": 60, "checkpoint_every": 20})
    whole = train(snaps, cfg, tmp_path / "whole.pt", tmp_path / "whole.csv")

    def interrupt(step, metrics):
        if step == 40:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(snaps, cfg, tmp_path / "cut.pt", tmp_path / "cut.csv", on_metrics=interrupt)
    assert partial_path(tmp_path / "cut.pt").exists()
    capsys.readouterr()
    resumed = train(snaps, cfg, tmp_path / "cut.pt", tmp_path / "cut.csv")
    said = capsys.readouterr().err
    assert "as chosen before the interruption" in said and "candidate" not in said  # not trained again
    assert resumed["head"] == whole["head"] and resumed["head_objective_inner"] == whole["head_objective_inner"]
    a, b = (torch.load(tmp_path / f"{n}.pt", weights_only=True)["ema"] for n in ("whole", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same weights as the run never interrupted


def test_uam_chooses_alike_in_any_units_and_on_the_unbalanced_path(tmp_path):
    """Review 81: the held-apart objective priced uAM's growth at ``growth`` where training prices it at ``growth /
    x_scale^2``, so cells in thousands weighed its ``growth/2 s^2`` term a million times too heavily; and the held-apart
    path of ``coupling: unbalanced`` had no length for growth and failed. The same cells times 1000 now give the same
    objectives times 1000^2 (the potential's unit: x^2 / t), to float32 round-off over 40 Adam steps."""
    snaps = snapshots(np.nan)
    labels = np.repeat(snaps.t_values, snaps.counts())
    cfg = TrainConfig(objective="uam", head="auto", **SMALL)
    runs = []
    for scale in (1.0, 1000.0):
        scaled = Snapshots.from_labels(np.asarray(snaps.x) * scale, labels, attrs=dict(snaps.attrs))
        runs.append(train(scaled, cfg, tmp_path / f"{scale:g}.pt", tmp_path / f"{scale:g}.csv"))
    for key in ("head_objective_scalar", "head_objective_inner"):
        assert runs[1][key] == pytest.approx(runs[0][key] * 1e6, rel=1e-3), key
    assert runs[1]["head"] == runs[0]["head"]
    unbalanced = TrainConfig(objective="uam", head="auto", coupling="unbalanced", **SMALL)
    summary = train(snaps, unbalanced, tmp_path / "u.pt", tmp_path / "u.csv")
    assert np.isfinite(summary["head_objective_inner"]) and summary["head"] in ("scalar", "inner")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"objective": "fm"}, "head 'auto' .* needs objective 'am', 'eam' or 'uam', got 'fm'"),
    ],
)
def test_head_auto_is_refused_where_no_potential_is_learned(settings, message):
    with pytest.raises(InputError, match=message):
        TrainConfig(head="auto", **settings)


def test_too_few_cells_to_hold_apart_is_a_clear_error(tmp_path):
    x = np.random.default_rng(0).normal(size=(45, 2)).astype(np.float32)
    from amcore import Snapshots

    snaps = Snapshots.from_labels(x, np.repeat([0.0, 1.0, 2.0], 15))  # a tenth of 15 is 1 cell
    with pytest.raises(InputError, match=r"head 'auto': holding 0.1 of the 15 cells at time 0 apart leaves 1"):
        train(snaps, TrainConfig(head="auto", **SMALL), tmp_path / "m.pt", tmp_path / "m.csv")
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_resumable_state_stops_head_auto_before_any_candidate_trains(tmp_path, capsys):
    (tmp_path / "m.pt.partial").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"m\.pt\.partial: the resumable state of an interrupted training cannot be"):
        train(snapshots(np.nan), TrainConfig(head="auto", **SMALL), tmp_path / "m.pt", tmp_path / "m.csv")
    assert "candidate" not in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt.partial"]  # kept: the user decides


def test_a_candidate_interrupted_then_given_up_leaves_no_resumable_state(tmp_path):
    """Killed during head auto's scalar candidate (its state is ``<checkpoint>.head-scalar.partial``), then run
    with a fixed head: the candidate's state, which nothing would resume, is removed."""
    snaps = snapshots(np.nan)
    cfg = TrainConfig(objective="am", head="scalar", **{**SMALL, "checkpoint_every": 20})

    def interrupt(step, metrics):
        if step == 40:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(snaps, cfg, tmp_path / "m.pt.head-scalar", tmp_path / "c.csv", on_metrics=interrupt)
    assert (tmp_path / "m.pt.head-scalar.partial").exists()
    train(snaps, cfg, tmp_path / "m.pt", tmp_path / "m.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "m.pt"]


def test_the_choice_draws_times_on_the_candidates_clock_and_estimates_the_same_objective():
    """On log-spaced times the candidates train on the motion clock; the choice draws on it too (audit: it drew
    uniformly in t, 2 % of the draws before 4 h). Either draw estimates the same integral, so their means agree
    within 4 standard errors of the difference (400 batches each, seeded), while the draws themselves differ."""
    from amcore import Snapshots
    from amcore.training.train import build_network, motion_levels, snapshot_path

    rng = np.random.default_rng(0)
    hours = np.array([0.1, 0.3, 1.0, 2.0, 4.0, 8.0, 24.0])
    labels = np.repeat(hours, 150)
    x = rng.standard_normal((labels.size, 2)) + np.c_[np.log(labels), np.zeros_like(labels)]
    snaps = Snapshots.from_labels(x.astype(np.float32), labels)
    knots, levels = motion_levels(snaps)
    cfg = TrainConfig(objective="am", **SMALL)
    path = snapshot_path(snaps, cfg, 0, torch.device("cpu"), 0.0, 0.0)
    torch.manual_seed(0)
    args = {"width": 16, "depth": 2, "activation": "softplus", "dim": 2, "t_range": [0.1, 24.0], "head": "scalar",
            "time_frequencies": 1, "time_knots": knots, "time_levels": levels, "kind": "potential"}  # fmt: skip
    net = {"scalar": build_network(args).requires_grad_(False)}
    spec = cfg.spec()
    flat = choice.held_apart_objectives(net, path, spec, 64, 400, seed=1)["scalar"]
    clock = choice.held_apart_objectives(net, path, spec, 64, 400, 1, knots, levels)["scalar"]
    assert not np.allclose(flat, clock)
    se = np.hypot(flat.std(ddof=1), clock.std(ddof=1)) / np.sqrt(400)
    assert abs(flat.mean() - clock.mean()) < 4 * se
