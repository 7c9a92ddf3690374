"""Samples per second of one full training step (loss, gradients, Adam) for AM and eAM.

amcore's step (``losses.action_loss``: stratified times, one grad for ``(grad_x s, d_t s)``, exact trace or
Hutchinson Laplacian) beside a straightforward double-backward step written here, on the same data, model
and batch, measured side by side in one run. MLP of 4 hidden layers of 256, batch 1024, d in {2, 5, 50}.

    python benchmarks/train_throughput.py [--steps 30] [--threads N]

The last line reads ``speedup_vs_baseline=<x>``: the smallest ratio over the cases.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from amcore.interpolants import SnapshotPath
from amcore.losses import ObjectiveSpec, action_loss
from amcore.potentials import Potential
from amcore.simulate import OrnsteinUhlenbeck, simulate_snapshots
from amcore.store import Snapshots
from amcore.timesampling import TimeSampler

BATCH, WIDTH, DEPTH = 1024, 256, 4


def baseline_loss(model, path, batch, gen, sigma):
    """The textbook form: sample, grad with create_graph, explicit Laplacian by a loop over dimensions."""
    t = path.t0 + path.duration * torch.rand(batch, generator=gen)
    x, _ = path.sample_at(t, gen)
    x.requires_grad_(True)
    t.requires_grad_(True)
    s = model(x, t)
    gx = torch.autograd.grad(s.sum(), x, create_graph=True)[0]
    gt = torch.autograd.grad(s.sum(), t, create_graph=True)[0]
    inner = gt + 0.5 * gx.pow(2).sum(-1)
    if sigma > 0:
        lap = sum(torch.autograd.grad(gx[:, i].sum(), x, create_graph=True)[0][:, i] for i in range(x.shape[1]))
        inner = inner + 0.5 * sigma**2 * lap
    x0, x1 = path.sample_endpoints(batch, gen)
    s0 = model(x0, torch.full((batch,), path.t0))
    s1 = model(x1, torch.full((batch,), path.t1))
    return s0.mean() - s1.mean() + path.duration * inner.mean()


def make_step(name: str, path: SnapshotPath, spec: ObjectiveSpec):
    """One full training step of implementation ``name`` on a fresh model."""
    torch.manual_seed(0)
    model = Potential(path.dim, (0.0, 1.0), width=WIDTH, depth=DEPTH)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    times = TimeSampler("stratified", 0.0, 1.0)

    def step() -> None:
        if name == "amcore":
            loss = action_loss(model, path, BATCH, gen, spec, times)
        else:
            loss = baseline_loss(model, path, BATCH, gen, spec.sigma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def rate(step, steps: int) -> float:
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * BATCH / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}, MLP {DEPTH}x{WIDTH}")
    print(f"{'variant':8} {'d':>3} {'amcore/s':>10} {'baseline/s':>11} {'speedup':>8} {'eam/am cost':>12}")
    ratios, am_rate = [], {}
    for dim in (2, 5, 50):
        x, t = simulate_snapshots(OrnsteinUhlenbeck(dim=dim), [0.0, 0.5, 1.0], 4096, seed=0)
        path = SnapshotPath(Snapshots.from_labels(x, t), coupling="independent")
        for kind in ("am", "eam"):
            spec = ObjectiveSpec(kind, sigma=1.0 if kind == "eam" else 0.0, laplacian="auto")
            results = {}
            for name in ("amcore", "baseline"):
                results[name] = rate(make_step(name, path, spec), args.steps)
            ratio = results["amcore"] / results["baseline"]
            ratios.append(ratio)
            if kind == "am":
                am_rate[dim] = results["amcore"]
            cost = am_rate[dim] / results["amcore"] if kind == "eam" else 1.0
            print(
                f"{kind:8} {dim:>3} {results['amcore']:>10.0f} {results['baseline']:>11.0f} {ratio:>8.2f} {cost:>12.2f}"
            )
    print(f"speedup_vs_baseline={min(ratios):.2f}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
