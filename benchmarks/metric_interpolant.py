"""A learned data-manifold interpolant (Metric Flow Matching's idea) against straight and spline paths, scored on
training times only.

For a pipeline store of one held-out split, the held-out times are dropped first. Each interior *training* time j
is then left out in turn and predicted from the training times around it, three ways:

- ``straight``: the exact OT pairs of the times before and after j, interpolated linearly (displacement);
- ``spline <tension>``: amcore's splines through OT chains of the other training times;
- ``metric <kappa> <eps>``: the same pairs on ``x_tau = (1 - tau) x_0 + tau x_1 + tau (1 - tau) phi(x_0, x_1, tau)``,
  with the correction ``phi`` (an MLP) trained to minimise the kinetic energy ``E[x_tau'^T G(x_tau) x_tau']`` under
  the LAND metric of the other training times' cells, ``G(x) = diag(h(x) + eps)^-1``,
  ``h_a(x) = mean_i (x_i,a - x_a)^2 exp(-|x - x_i|^2 / 2 kappa^2)``: cheap where cells are dense, dear between them,
  so the path bends toward the data.

Each prediction is scored by the exact W1 against the left-out cells (docs/leave-one-out.md has the numbers).

    python benchmarks/metric_interpolant.py STORE [--kappas 0.5 1 1 2] [--eps 1e-3 1e-3 1e-2 1e-2] [--steps 1500]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from amcore.data.store import read_store
from amcore.metrics import wasserstein
from amcore.paths.interpolants import chain_points, ot_pairs, spline_at

TENSIONS = (0.5, 1.0)


def land_metric_diagonal(x: torch.Tensor, cells: torch.Tensor, kappa: float, eps: float) -> torch.Tensor:
    """``h(x) + eps`` per coordinate (the inverse of the LAND metric's diagonal) at each row of ``x``."""
    diff = cells[None] - x[:, None]
    kernel = torch.exp(-diff.pow(2).sum(-1) / (2 * kappa**2))
    return (kernel[..., None] * diff.pow(2)).mean(1) + eps


def metric_interpolant(x0, x1, cells, kappa: float, eps: float, steps: int, seed: int = 0):
    """Train the correction ``phi`` on the pairs ``(x0, x1)``; returns ``tau -> x_tau`` for every pair."""
    torch.manual_seed(seed)
    dim = x0.shape[1]
    net = torch.nn.Sequential(
        torch.nn.Linear(2 * dim + 1, 64), torch.nn.SELU(), torch.nn.Linear(64, 64), torch.nn.SELU(),
        torch.nn.Linear(64, dim),
    )  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    a_all, b_all, c = (torch.as_tensor(v, dtype=torch.float32) for v in (x0, x1, cells))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(len(a_all), (256,), generator=gen)
        a, b, tau = a_all[i], b_all[i], torch.rand(256, 1, generator=gen)
        ends = torch.cat([a, b], 1)
        phi, dphi = torch.func.jvp(lambda s, ends=ends: net(torch.cat([ends, s], 1)), (tau,), (torch.ones_like(tau),))
        x = (1 - tau) * a + tau * b + tau * (1 - tau) * phi
        v = b - a + (1 - 2 * tau) * phi + tau * (1 - tau) * dphi
        loss = (v.pow(2) / land_metric_diagonal(x, c, kappa, eps)).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def at(tau: float) -> np.ndarray:
        with torch.no_grad():
            s = torch.full((len(a_all), 1), float(tau))
            return ((1 - s) * a_all + s * b_all + s * (1 - s) * net(torch.cat([a_all, b_all, s], 1))).numpy()

    return at


def compare(store: str, metrics: list[tuple[float, float]], steps: int, seed: int = 0) -> list[dict[str, float]]:
    """One dict of W1 per interior training time (the store's held-out times never enter)."""
    snaps = read_store(store)
    training = snaps.drop_times(snaps.attrs.get("holdout_times", []))
    times = np.asarray(training.t_values, dtype=np.float64)
    clouds = [np.asarray(training.snapshot(k), dtype=np.float64) for k in range(training.n_snapshots)]
    rows = []
    for j in range(1, len(clouds) - 1):
        rng = np.random.default_rng(seed)
        keep = [i for i in range(len(clouds)) if i != j]
        a, b = clouds[j - 1], clouds[j + 1]
        tau = (times[j] - times[j - 1]) / (times[j + 1] - times[j - 1])
        ia, ib, w = ot_pairs(a, b, 5000, rng)
        pick = rng.choice(len(ia), size=max(len(a), len(b)), p=w)
        x0, x1 = a[ia[pick]], b[ib[pick]]
        row = {"time": float(times[j]), "straight": wasserstein((1 - tau) * x0 + tau * x1, clouds[j], 1, 5000)}
        points, _ = chain_points([clouds[i] for i in keep], rng)
        for lam in TENSIONS:
            row[f"spline {lam:g}"] = wasserstein(spline_at(points, times[keep], times[j], lam), clouds[j], 1, 5000)
        others = np.concatenate([clouds[i] for i in keep])
        cells = others[rng.choice(len(others), min(2000, len(others)), replace=False)]
        for kappa, eps in metrics:
            at = metric_interpolant(x0, x1, cells, kappa, eps, steps, seed)
            row[f"metric {kappa:g} {eps:g}"] = wasserstein(at(tau), clouds[j], 1, 5000)
        print("  ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--kappas", nargs="+", type=float, default=[0.5, 1.0, 1.0, 2.0])
    parser.add_argument("--eps", nargs="+", type=float, default=[1e-3, 1e-3, 1e-2, 1e-2])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = compare(args.store, list(zip(args.kappas, args.eps, strict=True)), args.steps, args.seed)
    keys = [k for k in rows[0] if k != "time"]
    print(" ".join(f"{k.replace(' ', '_')}={np.mean([r[k] for r in rows]):.4f}" for k in keys))


if __name__ == "__main__":
    main()
