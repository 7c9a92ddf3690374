"""Correctness and precision of the training step on a CUDA GPU, against float64 on the CPU.

For the default potential (scalar head, MLP 4x256) after a short float32 training on the GPU, on fixed batches
(d = 5; AM, and eAM with the default Laplacian estimate: one Hutchinson probe), it reports the relative error of
the loss and of the parameter gradient of:

- ``fp32``: the hand-derived terms (``mlp_terms``) in float32, TF32 off;
- ``tf32``: the same with TF32 matrix products;
- ``func-fp32`` / ``func-bf16``: the ``torch.func`` form (the path of other potentials) in float32 and under bf16
  autocast;
- ``compiled``: the ``torch.func`` form compiled by inductor, against its eager float32 gradient;
- ``step_sync``: whether a training step (AM, fused Adam) makes the host wait for the GPU (CUDA's sync debug
  mode), which would keep it from queueing the next step ahead;
- ``ddp``: 20 training steps through DistributedDataParallel over NCCL (one process group of world size 1)
  against the same 20 steps without DDP (largest parameter difference).

A precision error only matters against the minibatch noise the optimizer sees anyway: column ``/noise`` divides
the gradient error by the spread of float64 gradients over 8 independent batches (``|g_i - mean| / |mean|``,
averaged). Well under 0.1 means the precision costs nothing that sampling does not already cost 10 times over.

    python benchmarks/device_check.py [--json FILE] [--device cuda]

``--device cpu`` runs the same on the CPU (gloo for DDP; TF32 is then a no-op): the script's smoke test
(``tests/test_device_check.py``, slow).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
import traceback

import torch
import torch.distributed as dist

from amcore.data.simulate import OrnsteinUhlenbeck, simulate_snapshots
from amcore.data.store import Snapshots
from amcore.models import mlp_terms
from amcore.models.potentials import Potential
from amcore.paths.interpolants import SnapshotPath
from amcore.training.speed import FusedActionLoss, action_step, set_precision
from amcore.training.timesampling import TimeSampler
from amcore.training.train import TrainConfig, adam

DIM, BATCH, NOISE_BATCHES = 5, 1024, 8


def fixed_batch(path: SnapshotPath, spec, seed: int) -> dict[str, torch.Tensor]:
    """One minibatch's inputs to ``FusedActionLoss.loss``, drawn on the CPU as training draws them, in float64."""
    times = TimeSampler("uniform", path.t0, path.t1)
    batch = FusedActionLoss(None, spec).draw(path, BATCH, torch.Generator().manual_seed(seed), times)
    return {k: (v.double() if v is not None and v.is_floating_point() else v) for k, v in batch.items()}


def loss_and_grad(model, spec, batch, device, dtype, hand: bool, compile: bool = False, bf16: bool = False):
    """Loss and flat parameter gradient of one form of the AM loss on ``batch``, in ``dtype`` on ``device``."""
    model = copy.deepcopy(model).to(device=device, dtype=dtype)
    terms = mlp_terms.ActionTerms(model) if hand else None
    fused = FusedActionLoss(model, spec, compile=compile, terms=terms)
    inputs = {k: (v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) if v is not None else v)
              for k, v in batch.items()}  # fmt: skip
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        loss, _ = fused.loss(**inputs)
    loss.backward()
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    return loss.detach().double().cpu(), grad.double().cpu()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def trainer(model: Potential, path: SnapshotPath, spec, device, seed: int, distributed=False, compile=False):
    """``run(n)``: ``n`` training steps of ``model`` as the training loop takes them (library loss, fused Adam)."""
    opt = adam(model, 1e-3)
    step = action_step(model, spec, fused=True, compile=compile, distributed=distributed)
    gen = torch.Generator(device).manual_seed(seed)
    times = TimeSampler("stratified", path.t0, path.t1, device=device)

    def run(n: int) -> None:
        for _ in range(n):
            loss = step(path, BATCH, gen, times)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return run


def trained_model(path_gpu: SnapshotPath, spec, device, steps: int = 300) -> Potential:
    """A potential after ``steps`` float32 steps on the GPU: precision is judged on realistic weights."""
    torch.manual_seed(0)
    model = Potential(DIM, (path_gpu.t0, path_gpu.t1), width=256, depth=4).to(device)
    trainer(model, path_gpu, spec, device, seed=0)(steps)
    return model.cpu()


def step_sync(model: Potential, path_gpu: SnapshotPath, spec, device) -> str:
    """``none`` when three training steps (loss, backward, fused Adam) never make the host wait for the GPU,
    else the first complaint of CUDA's sync debug mode: a waiting step cannot queue the next one ahead."""
    if device.type != "cuda":
        return "n/a (CPU)"
    run = trainer(copy.deepcopy(model).to(device), path_gpu, spec, device, seed=2)
    for sync_mode in ("default", "error"):  # the first round initialises lazily, which may sync
        torch.cuda.set_sync_debug_mode(sync_mode)
        try:
            run(3)
        except RuntimeError as err:
            frames = traceback.extract_tb(err.__traceback__)
            ours = [f for f in frames if f"{os.sep}amcore{os.sep}" in f.filename] or frames
            where = f"{os.path.relpath(ours[-1].filename)}:{ours[-1].lineno} ({ours[-1].line})"
            return f"{str(err).splitlines()[0]} at {where}"
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return "none"


def compiled_training(model: Potential, path_gpu: SnapshotPath, spec, device, steps: int = 30) -> dict:
    """``steps`` training steps with ``compile: true`` (CUDA graphs on a GPU) against the default eager step, from
    the same weights and random streams: the difference of the two weight changes relative to the eager change,
    and the milliseconds per step of each after warm-up (compilation and graph recording excluded)."""
    start_weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).to(device)
    changes, ms = {}, {}
    for compiled in (True, False):
        replica = copy.deepcopy(model).to(device)
        run = trainer(replica, path_gpu, spec, device, seed=3, compile=compiled)
        run(3)  # compilation and CUDA graph recording; the eager run takes the same 3 steps
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run(steps)
        if device.type == "cuda":
            torch.cuda.synchronize()
        ms[compiled] = (time.perf_counter() - start) / steps * 1e3
        changes[compiled] = torch.cat([p.detach().reshape(-1) for p in replica.parameters()]) - start_weights
    relative_difference = float((changes[True] - changes[False]).norm() / changes[False].norm())
    return {"relative_difference": relative_difference, "ms_compiled": ms[True], "ms_eager": ms[False]}


def ddp_difference(model: Potential, path_gpu: SnapshotPath, spec, device, steps: int = 20) -> float:
    """Largest parameter difference after ``steps`` steps through DDP (NCCL on CUDA, world size 1) and without."""
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    if device.type == "cuda":
        indexed = torch.device("cuda", torch.cuda.current_device())  # NCCL binds a group to an indexed device
        dist.init_process_group("nccl", rank=0, world_size=1, device_id=indexed)
    else:
        dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        finals = []
        for distributed in (True, False):
            replica = copy.deepcopy(model).to(device)
            trainer(replica, path_gpu, spec, device, seed=1, distributed=distributed)(steps)
            finals.append(torch.cat([p.detach().reshape(-1) for p in replica.parameters()]))
        return float((finals[0] - finals[1]).abs().max())
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    gpu, cpu = torch.device(args.device), torch.device("cpu")
    if gpu.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("device_check: no CUDA device visible (--device cpu runs the script's smoke test)")
    name = torch.cuda.get_device_name(gpu) if gpu.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {name}, d={DIM}, batch {BATCH}, MLP 4x256")
    x, t = simulate_snapshots(OrnsteinUhlenbeck(dim=DIM), [0.0, 0.5, 1.0], 4096, seed=0)
    snaps = Snapshots.from_labels(x, t)
    path_cpu = SnapshotPath(snaps, coupling="independent")
    path_gpu = SnapshotPath(snaps, coupling="independent", device=gpu)
    report: dict[str, dict] = {}
    print(f"{'objective':9} {'form':10} {'loss err':>9} {'grad err':>9} {'/noise':>7}")
    for kind in ("am", "eam"):
        spec = TrainConfig(objective=kind, sigma=1.0 if kind == "eam" else 0.0).spec()
        set_precision(gpu, tf32=False)
        start = time.perf_counter()
        model = trained_model(path_gpu, spec, gpu)
        print(f"  ({kind}: 300 float32 training steps on {gpu.type} in {time.perf_counter() - start:.1f} s)")
        batches = [fixed_batch(path_cpu, spec, seed) for seed in range(NOISE_BATCHES)]
        exact = [loss_and_grad(model, spec, b, cpu, torch.float64, hand=True) for b in batches]
        mean = torch.stack([g for _, g in exact]).mean(0)
        noise = sum(relative(g, mean) for _, g in exact) / NOISE_BATCHES
        loss64, grad64 = exact[0]
        forms = {
            "fp32": dict(hand=True),
            "tf32": dict(hand=True, tf32=True),
            "func-fp32": dict(hand=False),
            "func-bf16": dict(hand=False, bf16=True),
        }
        results = {"minibatch_noise": noise}
        for name, form in forms.items():
            set_precision(gpu, tf32=form.pop("tf32", False))
            loss, grad = loss_and_grad(model, spec, batches[0], gpu, torch.float32, **form)
            results[name] = {"loss": abs(float(loss - loss64)) / abs(float(loss64)), "grad": relative(grad, grad64)}
        set_precision(gpu, tf32=False)
        start = time.perf_counter()
        _, compiled = loss_and_grad(model, spec, batches[0], gpu, torch.float32, hand=False, compile=True)
        _, eager = loss_and_grad(model, spec, batches[0], gpu, torch.float32, hand=False)
        results["compiled"] = {"grad_vs_eager": relative(compiled, eager), "seconds": time.perf_counter() - start}
        for name in forms:
            err = results[name]
            print(f"{kind:9} {name:10} {err['loss']:>9.1e} {err['grad']:>9.1e} {err['grad'] / noise:>7.3f}")
        print(f"{kind:9} {'compiled':10} {'':>9} {results['compiled']['grad_vs_eager']:>9.1e} (vs eager float32)")
        print(f"{kind:9} minibatch gradient noise (float64, {NOISE_BATCHES} batches): {noise:.3f}")
        if trained := attempt(results, "compiled_training", compiled_training, model, path_gpu, spec, gpu):
            change, fast, slow = trained["relative_difference"], trained["ms_compiled"], trained["ms_eager"]
            print(f"{kind:9} compiled training, 30 steps: weight change {change:.1e} from eager's; "
                  f"{fast:.2f} ms a step against {slow:.2f} eager")  # fmt: skip
        if waits := attempt(results, "step_sync", step_sync, model, path_gpu, spec, gpu):
            print(f"{kind:9} host waits for the GPU within a training step: {waits}")
        if kind == "am":
            diff = attempt(results, "ddp_max_param_diff", ddp_difference, model, path_gpu, spec, gpu)
            if diff is not None:
                print(f"{kind:9} ddp          largest parameter difference after 20 steps: {diff:.1e}")
        report[kind] = results
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    if failed := [f"{kind}.{name}" for kind, results in report.items() for name in results.get("errors", {})]:
        raise SystemExit(f"device_check: failed: {', '.join(failed)}")


def attempt(results: dict, name: str, check, *args):
    """``check(*args)`` into ``results[name]``; an exception is recorded under ``results["errors"]`` and printed, and
    the remaining checks still run (a device lease is too short to lose them to one failure)."""
    try:
        results[name] = check(*args)
    except Exception as err:  # any failure of one check is reported, not raised
        results.setdefault("errors", {})[name] = f"{type(err).__name__}: {err}"
        print(f"device_check: {name} failed: {results['errors'][name]}")
        return None
    return results[name]


if __name__ == "__main__":
    main()
