"""The fused (and compiled) AM loss against the reference ``action_loss``: same loss, same parameter gradients.

Both draw the same random numbers in the same order, so they differ only by float32 rounding: operations are
reordered (one reverse pass for both first derivatives, one forward for both boundary terms), which moves each
sum of ``n`` terms by about ``sqrt(n) * 6e-8`` of its size; ``rtol = 1e-4`` leaves a wide margin over that while
a wrong term (a missing ``1/2``, a sign, a probe drawn in another order) is off by order one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from amcore import Snapshots, TrainConfig, train
from amcore.data.simulate import GrowingGaussian, simulate_snapshots
from amcore.models import mlp_terms
from amcore.models.objective import ObjectiveSpec
from amcore.models.potentials import Potential
from amcore.paths.interpolants import SnapshotPath
from amcore.training.losses import action_loss
from amcore.training.speed import FusedActionLoss, action_step, autocast
from amcore.training.timesampling import TimeSampler

SPECS = {
    "am": ObjectiveSpec("am"),
    "am-pathwise": ObjectiveSpec("am", pathwise=0.4),
    "am-pathwise-only": ObjectiveSpec("am", pathwise=1.0),  # no boundary point is evaluated
    "eam-exact": ObjectiveSpec("eam", sigma=0.8, sigma_final=0.3, laplacian="exact", time_weight="linear"),
    "eam-hutchinson": ObjectiveSpec("eam", sigma=0.8, laplacian="hutchinson", probes=2),
    "uam": ObjectiveSpec("uam", growth=0.5, time_weight="linear"),
    "uam-pathwise": ObjectiveSpec("uam", growth=0.5, pathwise=0.6),
}


@pytest.fixture(scope="module")
def path():
    """Snapshots with changing mass (uAM needs it), three dimensions, quadratic head (a nonzero Hessian)."""
    x, t = simulate_snapshots(GrowingGaussian(dim=3), list(np.linspace(0, 1, 5)), 300, seed=0)
    return SnapshotPath(Snapshots.from_labels(x, t), coupling="independent")


# A clock whose rates span 9-fold, the potential paced on it (potentials.clock_pace).
PACED = {"time_knots": [0.0, 0.05, 0.25, 1.0], "time_levels": [0.0, 0.3, 0.5, 1.0], "paced": True}


def loss_and_grads(
    path, spec, fused: bool, compile: bool = False, steps: int = 1, head: str = "quadratic", clock=None
):  # fmt: skip
    torch.manual_seed(0)
    model = Potential(path.dim, (path.t0, path.t1), head=head, width=32, depth=2, **(clock or {}))
    gen = torch.Generator().manual_seed(1)
    times = TimeSampler("importance", path.t0, path.t1)
    terms = mlp_terms.ActionTerms(model) if fused and head == "scalar" and not compile else None
    fn = FusedActionLoss(model, spec, compile, terms) if fused else None
    for _ in range(steps):
        model.zero_grad()
        loss = fn(path, 256, gen, times) if fused else action_loss(model, path, 256, gen, spec, times)
        loss.backward()
        times.commit()
    return loss.detach(), [p.grad for p in model.parameters()], times.second_moment


def assert_same(a, b):
    (loss_a, grads_a, moment_a), (loss_b, grads_b, moment_b) = a, b
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-4, atol=1e-6)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-4 * float(gb.abs().max()))
    torch.testing.assert_close(moment_a, moment_b, rtol=1e-4, atol=0)


@pytest.mark.parametrize("head", ["quadratic", "scalar"])
@pytest.mark.parametrize("case", sorted(SPECS))
def test_fused_loss_matches_the_reference(path, case, head):
    """Two steps: the second also checks that the importance sampler was fed the same integrand. The quadratic
    head takes the ``torch.func`` form, the scalar head the hand-derived passes of ``mlp_terms``."""
    assert_same(
        loss_and_grads(path, SPECS[case], fused=True, steps=2, head=head),
        loss_and_grads(path, SPECS[case], False, steps=2, head=head),
    )


@pytest.mark.parametrize("head", ["quadratic", "scalar"])
@pytest.mark.parametrize("case", ["am", "am-pathwise", "eam-exact", "uam-pathwise"])
def test_fused_loss_matches_the_reference_for_a_paced_potential(path, case, head):
    """The pace scales ``s`` row by row (interior and boundary rows alike) and weighs every term by its inverse."""
    fused = loss_and_grads(path, SPECS[case], fused=True, steps=2, head=head, clock=PACED)
    assert_same(fused, loss_and_grads(path, SPECS[case], False, steps=2, head=head, clock=PACED))
    assert not torch.allclose(fused[0], loss_and_grads(path, SPECS[case], True, steps=2, head=head)[0], rtol=1e-2)


@pytest.mark.parametrize("case", ["uam", "uam-pathwise"])
def test_fused_loss_matches_the_reference_on_the_unbalanced_path(case):
    """Each point's own mass and rate (the unbalanced pairs'), and boundary draws from the snapshots themselves."""
    x, t = simulate_snapshots(GrowingGaussian(dim=3), list(np.linspace(0, 1, 5)), 300, seed=0)
    unbalanced = SnapshotPath(Snapshots.from_labels(x, t), coupling="unbalanced", growth_length=2.0)
    assert_same(
        loss_and_grads(unbalanced, SPECS[case], fused=True, steps=2, head="scalar"),
        loss_and_grads(unbalanced, SPECS[case], False, steps=2, head="scalar"),
    )


def test_autocast_off_on_cpu_leaves_the_loss_unchanged(path):
    """bf16 is gated to CUDA: asking for it on a CPU must not change a single bit."""
    spec = SPECS["am"]
    with autocast(torch.device("cpu"), bf16=True):
        inside = loss_and_grads(path, spec, fused=True)
    outside = loss_and_grads(path, spec, fused=True)
    assert torch.equal(inside[0], outside[0])


@pytest.mark.slow
@pytest.mark.parametrize("case", ["am", "eam-hutchinson", "uam"])
def test_compiled_loss_matches_the_reference(path, case):
    """inductor on the torch.func form (about 40 s of compilation per case on 2 CPU cores)."""
    assert_same(
        loss_and_grads(path, SPECS[case], fused=True, compile=True, steps=2),
        loss_and_grads(path, SPECS[case], False, steps=2),
    )


def test_short_training_is_the_same_fused_or_not(tmp_path, path):
    """30 Adam steps: each update moves a weight by at most ``lr``, and a relative gradient difference ``delta``
    moves it by about ``lr * delta``; after 30 steps of lr 1e-3 the runs stay within 1e-5 of each other."""
    snaps = Snapshots.from_labels(*simulate_snapshots(GrowingGaussian(dim=2), [0.0, 0.5, 1.0], 200, seed=0))
    weights = {}
    for fused in (True, False):
        cfg = TrainConfig(objective="eam", sigma=0.5, coupling="independent", steps=30, batch_size=64, width=16,
                          depth=2, lr=1e-3, fused=fused, log_every=10, threads=1)  # fmt: skip
        train(snaps, cfg, tmp_path / f"{fused}.pt", tmp_path / f"{fused}.csv")
        weights[fused] = torch.load(tmp_path / f"{fused}.pt", weights_only=True)["model"]
    for key, value in weights[True].items():
        torch.testing.assert_close(value, weights[False][key], rtol=0, atol=1e-5)


def test_training_takes_the_hand_derived_terms_where_they_apply():
    spec = SPECS["am"]
    assert action_step(Potential(3, (0.0, 1.0)), spec, fused=True, compile=False, distributed=False).terms is not None
    quadratic = Potential(3, (0.0, 1.0), head="quadratic")
    assert action_step(quadratic, spec, fused=True, compile=False, distributed=False).terms is None
