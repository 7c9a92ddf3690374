"""Where a GPU training step's time goes: kernel launches a step, wall and host time a step, GPU busy time.

The eager step (AM and eAM, d = 5, batch 1024, MLP 4x256, independent and OT couplings) as the training loop takes
it (``device_check.trainer``): 100 timed steps after 20 of warm-up, then 10 under the torch profiler, whose table
for OT-coupled AM is printed. When the host takes as long as the wall clock to queue a step while the GPU is busy
for a fraction of it, the step is bound by kernel launches, which CUDA graphs (``compile: true``) remove.

    python benchmarks/gpu_step_profile.py        # needs a CUDA GPU
"""

from __future__ import annotations

import time

import torch
from device_check import DIM, trainer
from torch.profiler import ProfilerActivity, profile

from amcore.data.simulate import OrnsteinUhlenbeck, simulate_snapshots
from amcore.data.store import Snapshots
from amcore.models.potentials import Potential
from amcore.paths.interpolants import SnapshotPath
from amcore.training.train import TrainConfig


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("gpu_step_profile: no CUDA device visible")
    dev = torch.device("cuda")
    x, t = simulate_snapshots(OrnsteinUhlenbeck(dim=DIM), [0.0, 0.5, 1.0], 4096, seed=0)
    for coupling in ("independent", "ot"):
        path = SnapshotPath(Snapshots.from_labels(x, t), coupling=coupling, device=dev)
        for kind in ("am", "eam"):
            spec = TrainConfig(objective=kind, sigma=1.0 if kind == "eam" else 0.0).spec()
            model = Potential(DIM, (path.t0, path.t1), width=256, depth=4).to(dev)
            run = trainer(model, path, spec, dev, seed=0)
            run(20)
            torch.cuda.synchronize()
            start = time.perf_counter()
            run(100)
            host = time.perf_counter() - start
            torch.cuda.synchronize()
            wall = time.perf_counter() - start
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                run(10)
                torch.cuda.synchronize()
            kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
            busy_ms = sum(e.device_time for e in kernels) / 10 / 1e3
            print(f"{coupling:11} {kind}: {wall * 10:.2f} ms/step wall, host queues a step in {host * 10:.2f} ms, "
                  f"{len(kernels) / 10:.0f} kernels/step, GPU busy {busy_ms:.2f} ms/step")  # fmt: skip
            if coupling == "ot" and kind == "am":
                print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
