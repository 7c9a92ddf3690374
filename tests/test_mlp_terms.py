"""The hand-derived AM terms of the MLP potential against autograd, in float64.

Both sides compute the same sums in a different order, so in float64 they agree to about ``1e-15`` relative;
``rtol = 1e-10`` leaves five orders of magnitude of margin while a wrong derivative (a sign, a missing factor 2,
an adjoint sent to the wrong layer) is off by order one. Every output gets its own random weight in the
scalarised loss, so each one's adjoint is checked, not only the combination AM uses.
"""

from __future__ import annotations

import pytest
import torch

from amcore.models import mlp_terms
from amcore.models.potentials import Potential


def reference_terms(model, x, t, tangents, x_ends, t_ends):
    """``s``, ``grad_x s``, ``d_t s``, ``sum_k e_k^T (hess_x s) e_k`` and the boundary ``s`` by double backward."""
    x, t = x.clone().requires_grad_(True), t.clone().requires_grad_(True)
    s = model(x, t)
    gx, gt = torch.autograd.grad(s.sum(), (x, t), create_graph=True)
    quad = sum((torch.autograd.grad((gx * e).sum(), x, create_graph=True)[0] * e).sum(-1) for e in tangents)
    return s, gx, gt, quad, model(x_ends, t_ends)


# A network in the data's own units, one that standardises cells in thousands over a time span in seconds, and a
# paced one (potentials.clock_pace: its scale changes with t, and its d_t s takes no term from the pace).
PACED = {"time_knots": [0.5, 0.55, 1.0, 2.0], "time_levels": [0.0, 0.3, 0.45, 1.0], "paced": True}
UNITS = [{}, {"x_center": [3e3, -1e3, 5e2], "x_scale": 2.5e3, "t_unit": 7.2e3}, PACED]


@pytest.mark.parametrize(("depth", "frequencies"), [(1, 0), (3, 4)])
@pytest.mark.parametrize("activation", ["silu", "tanh", "softplus", "gelu"])
@pytest.mark.parametrize("units", UNITS, ids=["plain", "standardised", "paced"])
def test_terms_and_parameter_gradients_match_autograd(activation, depth, frequencies, units):
    torch.manual_seed(0)
    dim, n = 3, 11
    model = Potential(
        dim, (0.5, 2.0), width=16, depth=depth, activation=activation, time_frequencies=frequencies, **units
    )
    model = model.double()
    assert mlp_terms.supports(model) and model.paced == bool(units.get("paced"))
    center, scale = model.net.x_center, model.net.x_scale
    x, t = center + scale * torch.randn(n, dim, dtype=torch.float64), 0.5 + 1.5 * torch.rand(n, dtype=torch.float64)
    tangents = torch.randn(2, n, dim, dtype=torch.float64)
    x_ends = center + scale * torch.randn(2 * n, dim, dtype=torch.float64)
    t_ends = torch.cat([torch.full((n,), 0.5), torch.full((n,), 2.0)]).double()
    weights = [torch.randn(n, dtype=torch.float64), torch.randn(n, dim, dtype=torch.float64)]
    weights += [torch.randn(n, dtype=torch.float64) for _ in range(2)] + [torch.randn(2 * n, dtype=torch.float64)]
    results = []
    for terms in (reference_terms, mlp_terms.action_terms):
        model.zero_grad()
        outputs = terms(model, x, t, tangents, x_ends, t_ends)
        sum((w * out).sum() for w, out in zip(weights, outputs, strict=True)).backward()
        results.append([out.detach() for out in outputs] + [p.grad.clone() for p in model.parameters()])
    for mine, reference in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-10, atol=1e-10 * float(reference.abs().max()))


def test_without_tangents_there_is_no_laplacian_term():
    model = Potential(2, (0.0, 1.0), width=8, depth=2)
    x, t = torch.randn(5, 2), torch.rand(5)
    s, gx, gt, quad, s_ends = mlp_terms.action_terms(model, x, t, None, torch.randn(10, 2), torch.rand(10))
    assert quad is None and s.shape == gt.shape == (5,) and gx.shape == (5, 2) and s_ends.shape == (10,)
    torch.testing.assert_close(s, model(x, t))


def test_supports_only_what_it_derives():
    """Other heads and other activation variants fall back to the ``torch.func`` form."""
    assert mlp_terms.supports(Potential(2, (0.0, 1.0)))
    assert not mlp_terms.supports(Potential(2, (0.0, 1.0), head="quadratic"))
    assert not mlp_terms.supports(Potential(2, (0.0, 1.0), head="inner"))
    assert not mlp_terms.supports(Potential(2, (0.0, 1.0), depth=0))
    approximate = Potential(2, (0.0, 1.0), activation="gelu")
    approximate.net.net[1].approximate = "tanh"
    sharper = Potential(2, (0.0, 1.0), activation="softplus")
    sharper.net.net[1].beta = 2.0
    assert not mlp_terms.supports(approximate) and not mlp_terms.supports(sharper)
