"""The peers from their own package: TorchCFM's OT-CFM and I-CFM trained by amcore's loop on snapshots."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import velocity_error

import amcore
from amcore import Snapshots, TrainConfig, train
from amcore.training.train import Run

torchcfm = pytest.importorskip("torchcfm")


@pytest.mark.parametrize(("coupling", "matcher"), [("ot", "ExactOptimalTransportConditionalFlowMatcher"),
                                                   ("independent", "ConditionalFlowMatcher")])  # fmt: skip
def test_the_torchcfm_matcher_is_the_packages_own(gaussian_snaps, coupling, matcher):
    _, _, snaps = gaussian_snaps
    cfg = TrainConfig(objective="fm", implementation="torchcfm", coupling=coupling, steps=1, width=8, depth=1)
    run = Run(snaps, cfg, None)
    assert type(run.matcher).__module__ == "torchcfm.conditional_flow_matching"
    assert type(run.matcher).__name__ == matcher and run.matcher.sigma == cfg.torchcfm_sigma
    assert run.path.coupling == "independent", "the path solves no coupling: the matcher pairs each minibatch"


def test_torchcfm_ot_cfm_learns_the_velocity_and_is_reproducible(tmp_path, gaussian_snaps):
    """OT-CFM with minibatch OT of 128 cells a side learns the Gaussian path's (gradient) velocity: the untrained
    field is ~100 % off; minibatch OT's pairing error and sigma = 0.1 leave a floor well under 30 % on this path
    (amcore's own FM reaches < 25 % in the same steps, test_train). Two runs with one seed are identical: the
    package's global-RNG draws are seeded from amcore's generators."""
    sim, times, snaps = gaussian_snaps
    cfg = TrainConfig(objective="fm", implementation="torchcfm", coupling="ot", steps=500, batch_size=128, lr=3e-3,
                      seed=0, log_every=100)  # fmt: skip
    train(snaps, cfg, tmp_path / "a.pt", tmp_path / "a.csv")
    model = amcore.load(tmp_path / "a.pt")
    assert model.objective == "fm"
    assert velocity_error(sim, model, times) < 0.3
    short = TrainConfig(**{**cfg.__dict__, "steps": 20})
    for name in ("b", "c"):
        train(snaps, short, tmp_path / f"{name}.pt", tmp_path / f"{name}.csv")
    b, c = (torch.load(tmp_path / f"{n}.pt", weights_only=True)["model"] for n in ("b", "c"))
    for key in b:
        torch.testing.assert_close(b[key], c[key], rtol=0, atol=0)


@pytest.mark.parametrize("bad", [{"objective": "am"}, {"interpolation": "spline"}, {"coupling": "entropic"}])
def test_torchcfm_refuses_what_the_package_does_not_do(bad):
    with pytest.raises(ValueError, match="implementation 'torchcfm'"):
        TrainConfig(**{"objective": "fm", "implementation": "torchcfm", **bad})


def test_the_minibatch_pairs_follow_the_observed_clock():
    """The loss's targets are the matcher's ``x1 - x0`` divided by each interval's length and its times lie in
    that interval: a constant shift by 1 over intervals of 0.5 and 2 has speed 2 then 0.5."""
    from amcore.paths.interpolants import SnapshotPath
    from amcore.training.losses import torchcfm_loss, torchcfm_matcher

    x = np.zeros((30, 1), dtype=np.float32)
    x[10:20], x[20:] = 1.0, 2.0
    snaps = Snapshots.from_labels(x, np.repeat([0.0, 0.5, 2.5], 10))
    path = SnapshotPath(snaps, "independent", 5000)
    seen = []

    def field(xt, t):
        seen.append(t.detach())
        k = (t > 0.5).float()[:, None]
        return (1 - k) * 2.0 + k * 0.5 + 0 * xt

    loss = torchcfm_loss(field, path, torchcfm_matcher("independent", 0.0), 64, torch.Generator().manual_seed(0))
    assert float(loss) == pytest.approx(0.0, abs=1e-10)
    t = torch.cat(seen)
    assert float(t.min()) >= 0 and float(t.max()) <= 2.5 and float((t <= 0.5).float().mean()) == 0.5


def test_torchcfm_on_a_simulators_exact_marginals_is_refused_clearly():
    """TorchCFM pairs cells of observed times; a simulator's exact marginals have none to pair."""
    from amcore.data.simulate import GaussianPath
    from amcore.paths.interpolants import MarginalPath

    cfg = TrainConfig(objective="fm", implementation="torchcfm", steps=1, width=8, depth=1)
    with pytest.raises(ValueError, match="needs snapshots"):
        Run(None, cfg, MarginalPath(GaussianPath(), 0.0, 1.0))
