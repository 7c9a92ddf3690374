"""Samples per second of one full training step (loss, gradients, Adam) for AM and eAM.

Three implementations on the same data, model and batch, measured side by side in one run:

- ``amcore``: the step as training runs it with the default settings (``speed.action_step``: for the default
  potential, the hand-derived terms of ``mlp_terms``; with ``--compile``, the ``torch.func`` form compiled);
- ``torch.func``: the library's fused form for other potentials (the default step before ``mlp_terms``);
- ``baseline``: a straightforward double-backward step written here (``autograd.grad(..., create_graph=True)``
  then ``backward``), with PyTorch's default Adam; the other two use the training loop's (``train.adam``).

MLP of 4 hidden layers of 256, batch 1024 (``--batch``), d in {2, 5, 50}, on the CPU or ``--device cuda``. All
estimate the eAM Laplacian the same way, the library's default for that d (column ``lap``): the exact trace or
Hutchinson with Rademacher probes (``hutch1``: one probe).

    python benchmarks/train_throughput.py [--steps 10] [--threads N] [--compile] [--glibc-malloc]
                                          [--device cuda] [--batch 1024] [--tf32]

The process keeps the memory a step frees, as training does (``speed.keep_freed_memory``, for both sides: it is a
setting of the process); ``--glibc-malloc`` leaves glibc's defaults, under which the step's large temporaries fault
in again page by page in every step. After the table, a line ``eam_over_am_cost=<x>`` (the largest eAM/AM step-time
ratio of amcore) and, last, ``speedup_vs_baseline=<x>``: the smallest amcore/baseline ratio over the cases.
Column ``bound`` (AM): the baseline's time over that of the step's matrix products alone (``am_products``), the
speedup a step with no work besides those products would reach.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from amcore.data.simulate import OrnsteinUhlenbeck, simulate_snapshots
from amcore.data.store import Snapshots
from amcore.models.objective import ObjectiveSpec
from amcore.models.potentials import Potential
from amcore.paths.interpolants import SnapshotPath
from amcore.training.losses import exact_trace
from amcore.training.speed import FusedActionLoss, action_step, keep_freed_memory, set_precision
from amcore.training.timesampling import TimeSampler
from amcore.training.train import TrainConfig, adam

WIDTH, DEPTH = 256, 4
IMPLEMENTATIONS = ("amcore", "torch.func", "baseline")


def baseline_loss(model, path, batch, gen, spec: ObjectiveSpec):
    """The textbook form: sample, one grad in (x, t) with create_graph, the Laplacian estimate by double
    backward."""
    dev = path.device
    t = path.t0 + path.duration * torch.rand(batch, generator=gen, device=dev)
    x, _ = path.sample_at(t, gen)
    x.requires_grad_(True)
    t.requires_grad_(True)
    s = model(x, t)
    gx, gt = torch.autograd.grad(s.sum(), (x, t), create_graph=True)
    inner = gt + 0.5 * gx.pow(2).sum(-1)
    if spec.kind == "eam" and exact_trace(spec, x.shape[1]):
        lap = sum(torch.autograd.grad(gx[:, i].sum(), x, create_graph=True)[0][:, i] for i in range(x.shape[1]))
        inner = inner + 0.5 * spec.sigma**2 * lap
    elif spec.kind == "eam":
        probes = torch.randint(0, 2, (spec.probes, *x.shape), generator=gen, device=dev).float() * 2 - 1
        lap = sum((torch.autograd.grad((gx * e).sum(), x, create_graph=True)[0] * e).sum(-1) for e in probes)
        inner = inner + 0.5 * spec.sigma**2 * lap / spec.probes
    x0, x1 = path.sample_endpoints(batch, gen)
    s0 = model(x0, torch.full((batch,), path.t0, device=dev))
    s1 = model(x1, torch.full((batch,), path.t1, device=dev))
    return s0.mean() - s1.mean() + path.duration * inner.mean()


def make_step(name: str, path: SnapshotPath, spec: ObjectiveSpec, compile: bool, batch: int):
    """One full training step of implementation ``name`` on a fresh model, on the path's device."""
    torch.manual_seed(0)
    dev = path.device
    model = Potential(path.dim, (0.0, 1.0), width=WIDTH, depth=DEPTH).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4) if name == "baseline" else adam(model, 1e-4)
    gen = torch.Generator(dev).manual_seed(0)
    times = TimeSampler("stratified", 0.0, 1.0, device=dev)
    defaults = TrainConfig()
    library = action_step(model, spec, defaults.fused, compile or defaults.compile, distributed=False)
    fused = FusedActionLoss(model, spec)

    def step() -> None:
        if name == "amcore":
            loss = library(path, batch, gen, times)
        elif name == "torch.func":
            loss = fused(path, batch, gen, times)
        else:
            loss = baseline_loss(model, path, batch, gen, spec)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def am_products(dim: int, batch: int, device: torch.device):
    """Only the matrix products of one AM step, back to back on random operands of the same shapes: forward on the
    interior and the 2B boundary rows, the reverse pass, and the adjoint of all three (input and weight
    gradients). Any implementation of the AM gradient by reverse mode does these; their time bounds the step's."""
    width, first = WIDTH, dim + 9  # the MLP's input: x and 9 time features
    shapes = []
    for rows in (batch, 2 * batch):  # forward, input adjoints and weight gradients of the forward pass
        shapes += [(rows, first, width)] + [(rows, width, width)] * (DEPTH - 1)
        shapes += [(rows, width, width)] * (DEPTH - 1) + [(width, rows, first)] + [(width, rows, width)] * (DEPTH - 1)
    # reverse pass, its adjoint (one product per layer) and its weight gradients
    shapes += [(batch, width, width)] * (DEPTH - 1) + [(batch, width, first)]
    shapes += [(batch, first, width)] + [(batch, width, width)] * (DEPTH - 1)
    shapes += [(width, batch, first)] + [(width, batch, width)] * (DEPTH - 1)
    operands = [(torch.randn(m, k, device=device), torch.randn(k, n, device=device)) for m, k, n in shapes]

    def step() -> None:
        for a, b in operands:
            a @ b

    return step


def rates(steps: dict, n: int, batch: int, sync, rounds: int = 3) -> dict[str, float]:
    """Samples per second of each step, the best of ``rounds`` interleaved rounds of ``n`` steps: other load on
    the machine only ever slows a round down, and interleaving exposes both sides to the same load. ``sync``
    waits for queued GPU work, which a CUDA step returns before it has run."""
    for step in steps.values():
        for _ in range(2):
            step()
    best = dict.fromkeys(steps, 0.0)
    for _ in range(rounds):
        for name, step in steps.items():
            sync()
            start = time.perf_counter()
            for _ in range(n):
                step()
            sync()
            best[name] = max(best[name], n * batch / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="steps per round (3 rounds)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="the library's step with compile: true")
    parser.add_argument("--glibc-malloc", action="store_true", help="glibc's defaults: freed memory goes back")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--batch", type=int, default=1024, help="rows per group (interior, each boundary)")
    parser.add_argument("--tf32", action="store_true", help="TF32 matrix products on CUDA (both sides)")
    args = parser.parse_args()
    device = torch.device(args.device)
    kept = not args.glibc_malloc and keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    set_precision(device, args.tf32)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    library = "compiled (inductor)" if args.compile else "default settings"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    precision = "TF32" if args.tf32 and device.type == "cuda" else "float32"
    print(f"torch {torch.__version__}, {where}, {precision}, batch {args.batch}, MLP {DEPTH}x{WIDTH}")
    print(f"amcore: {library}; freed memory: {'kept (as in training)' if kept else 'malloc defaults'}")
    print(
        f"{'variant':8} {'d':>3} {'lap':>7} {'amcore/s':>10} {'torch.func/s':>13} {'baseline/s':>11} {'speedup':>8} "
        f"{'bound':>6} {'eam/am cost':>12}"
    )
    ratios, costs, am_rate = [], [], {}
    for dim in (2, 5, 50):
        x, t = simulate_snapshots(OrnsteinUhlenbeck(dim=dim), [0.0, 0.5, 1.0], 4096, seed=0)
        path = SnapshotPath(Snapshots.from_labels(x, t), coupling="independent", device=device)
        for kind in ("am", "eam"):
            spec = TrainConfig(objective=kind, sigma=1.0 if kind == "eam" else 0.0).spec()
            lap = "-" if kind == "am" else "exact" if exact_trace(spec, dim) else f"hutch{spec.probes}"
            steps = {name: make_step(name, path, spec, args.compile, args.batch) for name in IMPLEMENTATIONS}
            if kind == "am":
                steps["products"] = am_products(dim, args.batch, device)
            start = time.perf_counter()
            steps["amcore"]()
            sync()
            if args.compile:
                print(f"  (first compiled step, compilation included: {time.perf_counter() - start:.1f} s)")
            results = rates(steps, args.steps, args.batch, sync)
            ratio = results["amcore"] / results["baseline"]
            ratios.append(ratio)
            if kind == "am":
                am_rate[dim] = results["amcore"]
            cost = am_rate[dim] / results["amcore"] if kind == "eam" else 1.0
            if kind == "eam":
                costs.append(cost)
            bound = f"{results['products'] / results['baseline']:>6.2f}" if kind == "am" else f"{'':>6}"
            print(
                f"{kind:8} {dim:>3} {lap:>7} {results['amcore']:>10.0f} {results['torch.func']:>13.0f} "
                f"{results['baseline']:>11.0f} {ratio:>8.2f} {bound} {cost:>12.2f}"
            )
    print(f"eam_over_am_cost={max(costs):.2f}")
    print(f"speedup_vs_baseline={min(ratios):.2f}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
