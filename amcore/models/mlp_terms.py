"""The AM terms of the default potential (scalar head on an MLP) from hand-derived passes.

For ``s = w_o . h_L + b_o``, ``h_l = phi(z_l)``, ``z_l = W_l h_{l-1} + b_l``, ``h_0 = [x, embed(t)]``:

- one forward pass on the interior rows and one on the boundary rows (the two boundary terms together);
- one reverse pass ``g_{l-1} = (g_l * phi'(z_l)) W_l`` gives ``grad_x s`` and ``d_t s`` together;
- for eAM, ``e^T (hess_x s) e = sum_l <phi''(z_l) zdot_l^2, g_l>`` from one forward tangent ``zdot_l`` per probe
  ``e``, where a Hessian-vector product would run a reverse pass over the reverse pass;
- the adjoint of all of that, written out, for the parameter gradients.

It does the matrix products autograd would and far fewer elementwise kernels: a layer's ``phi``, ``phi'`` and
``phi''`` come from one or two transcendentals (SiLU: a sigmoid; tanh: a tanh; softplus: softplus and a sigmoid;
GELU: erf and exp) and are computed once, mostly in place. On one CPU thread that made the AM step about 1.1x and
the eAM step 1.2-1.5x faster than the ``torch.func`` form (``benchmarks/train_throughput.py``; figures in the
README's "Training speed").
``tests/test_mlp_terms.py`` checks every output and every gradient against autograd in float64.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from amcore.models.potentials import MLPField, Potential


def _silu(z: torch.Tensor, order: int) -> list[torch.Tensor]:
    """In place where it can: every fresh tensor is a page-faulting allocation under glibc's default malloc."""
    sig = torch.sigmoid(z)
    value = z * sig
    if order == 1:
        return [value, z.sub_(value).add_(1).mul_(sig)]  # sig (1 + z (1 - sig))
    q = torch.addcmul(sig, sig, sig, value=-1)  # sig (1 - sig)
    z_tilt = torch.add(z, value, alpha=-2)  # z (1 - 2 sig)
    third = None
    if order == 3:
        tilt = torch.add(sig, -0.5).mul_(-2)
        third = (z_tilt + 3).mul_(tilt).sub_(z * q, alpha=2).mul_(q)  # q ((1 - 2 sig)(3 + z (1 - 2 sig)) - 2 z q)
    curvature = z_tilt.add_(2).mul_(q)  # q (2 + z (1 - 2 sig))
    slope = z.sub_(value).add_(1).mul_(sig)
    return [value, slope, curvature] + ([third] if third is not None else [])


def _tanh(z: torch.Tensor, order: int) -> list[torch.Tensor]:
    value = torch.tanh(z)
    slope = 1 - value * value
    out = [value, slope, -2 * value * slope][: order + 1]
    if order == 3:
        out.append(2 * slope * (2 * value * value - slope))
    return out


def _softplus(z: torch.Tensor, order: int) -> list[torch.Tensor]:
    sig = torch.sigmoid(z)
    q = sig * (1 - sig)
    return [nn.functional.softplus(z), sig, q, q * (1 - 2 * sig)][: order + 1]


def _gelu(z: torch.Tensor, order: int) -> list[torch.Tensor]:
    cdf = 0.5 * (1 + torch.erf(z * (1 / math.sqrt(2))))
    pdf = torch.exp(-0.5 * z * z) * (1 / math.sqrt(2 * math.pi))
    out = [z * cdf, cdf + z * pdf]
    if order >= 2:
        out.append(pdf * (2 - z * z))
    if order == 3:
        out.append(pdf * z * (z * z - 4))
    return out


# phi and its first ``order`` derivatives at z (order 1, 2 or 3), from as few transcendentals as each needs.
DERIVATIVES = {nn.SiLU: _silu, nn.Tanh: _tanh, nn.Softplus: _softplus, nn.GELU: _gelu}


def supports(potential: nn.Module) -> bool:
    """Whether ``action_terms`` covers this model: a scalar-head ``Potential`` on an MLP with a known activation
    in its default form (Softplus with beta 1, exact GELU)."""
    if not isinstance(potential, Potential) or potential.head != "scalar" or not isinstance(potential.net, MLPField):
        return False
    activations = potential.net.net[1::2]
    if not activations:
        return False
    for layer in activations:
        if type(layer) not in DERIVATIVES:
            return False
        if isinstance(layer, nn.Softplus) and (layer.beta != 1 or layer.threshold < 20):
            return False
        if isinstance(layer, nn.GELU) and layer.approximate != "none":
            return False
    return True


def action_terms(
    potential: Potential,
    x: torch.Tensor,
    t: torch.Tensor,
    tangents: torch.Tensor | None,
    x_ends: torch.Tensor,
    t_ends: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """``s``, ``grad_x s``, ``d_t s`` and ``sum_k e_k^T (hess_x s) e_k`` over ``tangents`` (``K x B x d``) at the
    interior rows ``(x, t)``, and ``s`` at ``(x_ends, t_ends)``; differentiable in the parameters only.

    The passes run on the MLP's standardised inputs ``z = (x - c) / a``; with ``s = scale(t) g(z, t)`` (``gain``, or
    ``gain`` times a pace whose own derivative needs no term: ``potentials.clock_pace``) the chain rule scales
    ``grad_x`` by ``scale / a`` and the Hessian by ``scale / a^2``."""
    mlp = potential.net
    linears = list(mlp.net[0::2])
    derivative = DERIVATIVES[type(mlp.net[1])]
    params = [p for layer in linears for p in (layer.weight, layer.bias)]
    probes = tangents if tangents is not None else x.new_empty(0)
    z, z_ends = mlp.standardize(x), mlp.standardize(x_ends)
    g, gz, gt, quad, g_ends = _ActionTerms.apply(z, t, probes, z_ends, t_ends, mlp.embed, derivative, *params)
    scale, a = potential.scale(t), mlp.x_scale
    per_row = scale[:, None] if potential.paced else scale
    quad = scale / a**2 * quad if tangents is not None else None
    return scale * g, per_row / a * gz, scale * gt, quad, potential.scale(t_ends) * g_ends


class ActionTerms(nn.Module):
    """``action_terms`` of ``potential`` as a module's forward, so DistributedDataParallel can wrap it: DDP starts
    its gradient all-reduce from the forward of the module it wraps."""

    def __init__(self, potential: Potential) -> None:
        super().__init__()
        self.potential = potential

    def forward(self, x, t, tangents, x_ends, t_ends):
        return action_terms(self.potential, x, t, tangents, x_ends, t_ends)


class _ActionTerms(torch.autograd.Function):
    """Forward: the MLP on the interior and the boundary rows, the reverse pass and (eAM) the forward tangents on
    the interior rows. Backward: their adjoint, by hand.

    Interior and boundary rows stay separate matrices: stacked into one, the 3000-row products ran 7-18 % slower
    per row (a layer's activations no longer fit in cache). A CUDA bf16 autocast region is switched off inside:
    the in-place accumulations need one dtype, and bf16 would only add rounding to a host-bound step.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, x, t, probes, x_ends, t_ends, embed, derivative, *params):
        weights, biases = list(params[0::2]), list(params[1::2])
        hidden, w_out = len(weights) - 1, weights[-1]
        n, dim = x.shape
        eam = probes.numel() > 0
        features = embed(t)
        time_slope = embed.slope(t, features)
        h, h_ends = torch.cat([x, features], 1), torch.cat([x_ends, embed(t_ends)], 1)
        inputs, end_inputs, slopes, end_slopes, curvatures, thirds = [h], [h_ends], [], [], [], []
        for weight, bias in zip(weights[:hidden], biases[:hidden], strict=True):
            h, slope, curvature, *third = derivative(torch.addmm(bias, h, weight.t()), 3 if eam else 2)
            h_ends, end_slope = derivative(torch.addmm(bias, h_ends, weight.t()), 1)
            inputs.append(h)
            end_inputs.append(h_ends)
            slopes.append(slope)
            end_slopes.append(end_slope)
            curvatures.append(curvature)
            thirds.append(third[0] if eam else None)
        s = torch.addmm(biases[-1], h, w_out.t()).squeeze(-1)
        s_ends = torch.addmm(biases[-1], h_ends, w_out.t()).squeeze(-1)

        # Reverse pass: g_l = ds/dh_l, g_{l-1} = (g_l * phi'(z_l)) W_l.
        g = w_out.expand(n, -1)
        adjoints, deltas = [None] * hidden + [g], [None] * hidden
        for layer in reversed(range(hidden)):
            deltas[layer] = g * slopes[layer]
            g = deltas[layer] @ weights[layer]
            adjoints[layer] = g
        gx = g[:, :dim]
        gt = (g[:, dim:] * time_slope).sum(-1)

        # Forward tangents along each probe e: zdot_1 = e W_1x^T, zdot_{l+1} = (phi'(z_l) zdot_l) W_{l+1}^T, and
        # e^T (hess s) e = sum_l <phi''(z_l) zdot_l^2, g_l>.
        zdots, hdots, squares, quad = [], [], [], x.new_zeros(n)
        if eam:
            k = probes.shape[0]
            zdot = probes.reshape(k * n, dim) @ weights[0][:, :dim].t()
            for layer in range(hidden):
                zdots.append(zdot)
                squares.append(zdot.view(k, n, -1).pow(2).sum(0))
                quad += (curvatures[layer] * squares[layer] * adjoints[layer + 1]).sum(-1)
                if layer + 1 < hidden:
                    hdots.append((zdot.view(k, n, -1) * slopes[layer]).view(k * n, -1))
                    zdot = hdots[layer] @ weights[layer + 1].t()
        ctx.saved = (weights, inputs, end_inputs, slopes, end_slopes, curvatures, thirds, adjoints, deltas,
                     time_slope, probes, zdots, hdots, squares)  # fmt: skip
        return s, gx, gt, quad, s_ends

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, s_bar, gx_bar, gt_bar, quad_bar, ends_bar):
        (weights, inputs, end_inputs, slopes, end_slopes, curvatures, thirds, adjoints, deltas, time_slope, probes,
         zdots, hdots, squares) = ctx.saved  # fmt: skip
        hidden, (n, dim) = len(weights) - 1, gx_bar.shape
        eam = probes.numel() > 0
        k = probes.shape[0] if eam else 0
        weight_bars = [torch.zeros_like(w) for w in weights]
        bias_bars = [None] * (hidden + 1)
        # Adjoints of phi'(z_l) and phi''(z_l) on the interior rows, and of the tangents zdot_l.
        slope_bars, curvature_bars, zdot_bars = [None] * hidden, [None] * hidden, [None] * hidden

        # Adjoint of the reverse pass, from the input layer up; the Laplacian term also depends on each g_l.
        g_bar = torch.cat([gx_bar, gt_bar[:, None] * time_slope], 1)
        for layer in range(hidden):
            weight_bars[layer].addmm_(deltas[layer].t(), g_bar)
            delta_bar = g_bar @ weights[layer].t()
            slope_bars[layer] = delta_bar * adjoints[layer + 1]
            g_bar = delta_bar.mul_(slopes[layer])
            if eam:
                qb = quad_bar[:, None]
                g_bar += qb * curvatures[layer] * squares[layer]
                curvature_bars[layer] = qb * adjoints[layer + 1] * squares[layer]
                zdot_bars[layer] = 2 * qb * curvatures[layer] * adjoints[layer + 1] * zdots[layer].view(k, n, -1)
        weight_bars[hidden] += g_bar.sum(0, keepdim=True)

        # Adjoint of the forward tangents, from the top down.
        if eam:
            for layer in reversed(range(hidden)):
                if layer + 1 < hidden:
                    above = zdot_bars[layer + 1].view(k * n, -1)
                    weight_bars[layer + 1].addmm_(above.t(), hdots[layer])
                    hdot_bar = (above @ weights[layer + 1]).view(k, n, -1)
                    zdot_bars[layer] += hdot_bar * slopes[layer]
                    slope_bars[layer] += (hdot_bar * zdots[layer].view(k, n, -1)).sum(0)
            weight_bars[0][:, :dim].addmm_(zdot_bars[0].view(k * n, -1).t(), probes.reshape(k * n, dim))

        # Adjoint of the forward pass, interior and boundary rows.
        weight_bars[hidden].addmm_(s_bar[None, :], inputs[hidden]).addmm_(ends_bar[None, :], end_inputs[hidden])
        bias_bars[hidden] = (s_bar.sum() + ends_bar.sum()).reshape(1)
        h_bar, end_bar = s_bar[:, None] * weights[hidden], ends_bar[:, None] * weights[hidden]
        for layer in reversed(range(hidden)):
            z_bar = h_bar.mul_(slopes[layer]).addcmul_(slope_bars[layer], curvatures[layer])
            if eam:
                z_bar.addcmul_(curvature_bars[layer], thirds[layer])
            end_bar *= end_slopes[layer]
            weight_bars[layer].addmm_(z_bar.t(), inputs[layer]).addmm_(end_bar.t(), end_inputs[layer])
            bias_bars[layer] = z_bar.sum(0) + end_bar.sum(0)
            if layer:
                h_bar, end_bar = z_bar @ weights[layer], end_bar @ weights[layer]
        grads = [g for pair in zip(weight_bars, bias_bars, strict=True) for g in pair]
        return (None, None, None, None, None, None, None, *grads)
