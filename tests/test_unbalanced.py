"""uAM's unbalanced coupling: two subpopulations that grow at different rates are not carried into each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import amcore
from amcore import Snapshots, TrainConfig, train
from amcore.errors import InputError
from amcore.paths.interpolants import SnapshotPath

RATES = {"A": 0.5, "B": -0.3}  # per unit time: A grows, B dies; they never turn into each other


def clusters(times=(0.0, 1.0, 2.0), cells: int = 200, seed: int = 0) -> tuple[Snapshots, np.ndarray]:
    """Two clusters five spreads apart, drifting slowly, ``cells`` cells a time split by their population shares;
    weights carry the population's size (audit 46's design)."""
    rng = np.random.default_rng(seed)
    xs, labels, weights = [], [], []
    for t in times:
        sizes = {c: np.exp(r * t) for c, r in RATES.items()}
        n_a = int(round(cells * sizes["A"] / sum(sizes.values())))
        for c, n in (("A", n_a), ("B", cells - n_a)):
            centre = np.array([-2.5 if c == "A" else 2.5, 0.15 * t])
            xs.append(centre + 0.5 * rng.standard_normal((n, 2)))
            labels += [c] * n
        weights.append(np.full(cells, sum(sizes.values()) / cells))
    x = np.concatenate(xs).astype(np.float32)
    return Snapshots.from_labels(x, np.repeat(times, cells), weights=np.concatenate(weights)), np.array(labels)


def test_the_unbalanced_path_grows_each_cluster_in_place_and_keeps_the_snapshots():
    """The balanced plan carried 19 % of the mass from the dying cluster into the growing one (audit 46); the
    unbalanced one carries none, and its weighted marginals are the snapshots at the observed times."""
    snaps, labels = clusters()
    side = torch.as_tensor(labels == "A")
    crossing = {}
    for coupling, length in (("ot", None), ("unbalanced", 2.0 * 0.5 * np.sqrt(2))):
        path = SnapshotPath(snaps, coupling, growth_length=length)
        first = path.cum_weights <= 1  # the first interval's pairs, by their weights
        weight = torch.diff(path.cum_weights[first], prepend=torch.zeros(1, dtype=path.cum_weights.dtype))
        crossing[coupling] = float(weight[side[path.pair_a[first]] != side[path.pair_b[first]]].sum())
    assert crossing["ot"] > 0.1 and crossing["unbalanced"] < 1e-9
    gen = torch.Generator().manual_seed(0)
    masses = snaps.masses() / snaps.masses()[0]
    for k, t in enumerate((1e-6, 1.0 - 1e-6, 2.0 - 1e-6)):  # at (just after, just before) each observed time
        x, _, mass, _ = path.sample_weighted(torch.full((400_000,), t), gen)
        in_a = (x[:, 0] < 0).double()
        share_a = np.exp(RATES["A"] * round(t)) / sum(np.exp(r * round(t)) for r in RATES.values())
        # Monte Carlo over pairs drawn by weight: the estimates' standard errors are below 0.01 of the masses here
        se = float((mass.double()).std()) / np.sqrt(len(mass))
        assert float(mass.double().mean()) == pytest.approx(masses[k], abs=5 * se + 1e-3)
        assert float((mass.double() * in_a).mean()) == pytest.approx(masses[k] * share_a, abs=0.01 * masses[k])
    ends = path.sample_endpoints(100_000, gen)  # the snapshots themselves, each cell alike
    assert float((ends[0][:, 0] < 0).float().mean()) == pytest.approx(0.5, abs=0.01)


def test_uam_on_the_unbalanced_path_learns_each_cluster_s_own_rate(tmp_path):
    """Audit 46: on the balanced path uAM moved most of the dying cluster into the growing one and read it as
    growing; here its cells stay and each cluster's rate is its own (truth +0.5 and -0.3, within 0.1)."""
    snaps, labels = clusters()
    cfg = TrainConfig(objective="uam", coupling="unbalanced", steps=800, width=64, seed=0, threads=1, log_every=10**9)
    train(snaps, cfg, tmp_path / "m.pt")
    model = amcore.load(tmp_path / "m.pt")
    first = np.asarray(snaps.snapshot(0))
    pushed = model.trajectories(first, [0.0, 2.0], 10, method="weighted").x[-1]
    dying = labels[: len(first)] == "B"
    assert (pushed[dying, 0] < 0).sum() <= 0.05 * dying.sum()  # B's cells end in B
    for c, rate in RATES.items():
        cells = np.asarray(snaps.snapshot(1))[labels[len(first) : 2 * len(first)] == c]
        assert float(np.mean(model.growth_rate(cells, 1.0))) == pytest.approx(rate, abs=0.1)


def test_every_path_of_a_training_prices_growth_alike():
    """Review 49: the length scale was read from each path's own cells (a streamed path's resident rows, 9 % off
    the network's x_scale, and anew at every refresh; the validation cells'): now once, from the training cells
    that set the network's x_scale."""
    from amcore.training.train import Run

    snaps, _ = clusters()
    cfg = TrainConfig(objective="uam", coupling="unbalanced", validation=0.2, steps=10, width=8, depth=1)
    run = Run(snaps, cfg, None)
    assert run.growth_length == pytest.approx(2 * run.model_args["x_scale"] / np.sqrt(cfg.growth), rel=1e-6)


def test_an_unbalanced_problem_that_does_not_converge_pairs_as_ot_and_says_so(capsys):
    """Review 49: a solver that stopped unconverged (POT's log-domain one read an error of 1.0 on TIGON's lineage)
    gave shares read as if solved; now the interval is paired as by exact OT, with a note."""
    from amcore.paths.interpolants import unbalanced_shares

    x = np.random.default_rng(0).normal(size=(30, 2))
    r, c = unbalanced_shares(((x[:, None] - x[None] - 1) ** 2).sum(-1), 1.0, 2.0, float("nan"))
    np.testing.assert_array_equal(r, np.full(30, 1 / 30))
    assert "did not converge" in capsys.readouterr().err


def test_the_unbalanced_coupling_is_for_uam_on_straight_paths():
    for settings in ({"objective": "am"}, {"objective": "uam", "stride": 2}):  # splines need ot, and say so
        with pytest.raises(InputError, match="coupling 'unbalanced' lets mass grow and die along uAM's path"):
            TrainConfig(coupling="unbalanced", **settings)
