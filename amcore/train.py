"""The training loop: Adam with cosine decay, an EMA of the weights, atomic checkpoints, local metrics."""

from __future__ import annotations

import copy
import csv
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from amcore.interpolants import SnapshotPath
from amcore.losses import OBJECTIVES, ObjectiveSpec, action_loss, fm_loss
from amcore.potentials import MLPField, Potential, potential_velocity
from amcore.store import Snapshots
from amcore.timesampling import TimeSampler


@dataclass
class TrainConfig:
    """Everything a training run depends on; the config's ``models.<name>`` section, flat."""

    objective: str = "am"
    coupling: str = "ot"
    steps: int = 4000
    batch_size: int = 512
    lr: float = 1e-3
    lr_final: float = 1e-5
    ema_decay: float = 0.999
    head: str = "scalar"
    width: int = 128
    depth: int = 3
    activation: str = "silu"
    time_frequencies: int = 4
    time_sampling: str = "stratified"
    time_weight: str = "none"
    sigma: float = 0.0
    sigma_final: float | None = None
    growth: float = 1.0
    laplacian: str = "auto"
    exact_trace_max_dim: int = 10
    probes: int = 1
    ot_max_size: int = 5000
    entropic_reg: float | None = None
    entropic_draws: int = 16
    seed: int = 0
    threads: int = 0
    log_every: int = 50
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; expected one of {OBJECTIVES}")
        if self.objective == "eam" and self.sigma <= 0:
            raise ValueError("objective 'eam' needs sigma > 0 (the diffusion of dX = grad s dt + sigma dW)")

    def spec(self) -> ObjectiveSpec:
        return ObjectiveSpec(
            self.objective, self.sigma, self.sigma_final, self.growth, self.laplacian,
            self.exact_trace_max_dim, self.probes, self.time_weight,
        )  # fmt: skip


def build_model(model_args: dict) -> nn.Module:
    """Rebuild a model from the arguments stored in its checkpoint: a potential, or a field for FM."""
    args = dict(model_args)
    args["t_range"] = tuple(args["t_range"])
    if args.pop("kind") == "field":
        return MLPField(**args)
    return Potential(**args)


def save_checkpoint(path: Path, payload: dict) -> None:
    """``torch.save`` to a temporary sibling, then rename: a killed job never leaves a half checkpoint."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """The EMA weights of a finished training and its checkpoint metadata."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(payload["model_args"])
    model.load_state_dict(payload["ema"])
    model.eval()
    return model, payload


def cosine_lr(step: int, cfg: TrainConfig) -> float:
    progress = step / max(1, cfg.steps - 1)
    return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * progress))


RESUME_IGNORES = ("threads", "log_every", "checkpoint_every")


def partial_path(checkpoint: str | Path) -> Path:
    """Where a running training keeps its resumable state: beside, never instead of, the final checkpoint."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".partial")


def _same_run(saved: dict, cfg: TrainConfig) -> bool:
    current = asdict(cfg)
    return all(saved.get(k) == v for k, v in current.items() if k not in RESUME_IGNORES)


def train(
    snaps: Snapshots,
    cfg: TrainConfig,
    checkpoint: str | Path,
    loss_csv: str | Path,
    on_metrics: Callable[[int, dict], None] | None = None,
) -> dict:
    """Fit the model of ``cfg.objective`` on ``snaps``; returns summary metrics of the run.

    Every ``checkpoint_every`` steps the whole state (weights, EMA, optimiser, RNG, time sampler, loss
    history) goes atomically to ``<checkpoint>.partial``; a rerun after a kill resumes from it and ends
    with the same parameters as an uninterrupted run.
    """
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    path = SnapshotPath(
        snaps, cfg.coupling, cfg.ot_max_size, seed=cfg.seed, sigma=cfg.sigma if cfg.objective == "eam" else 0.0,
        entropic_reg=cfg.entropic_reg, entropic_draws=cfg.entropic_draws,
    )  # fmt: skip
    mlp = {"width": cfg.width, "depth": cfg.depth, "activation": cfg.activation}
    mlp["time_frequencies"] = cfg.time_frequencies
    if cfg.objective == "fm":
        model_args = {"kind": "field", "dim": snaps.dim, "out_dim": snaps.dim, "t_range": [path.t0, path.t1], **mlp}
    else:
        model_args = {"kind": "potential", "dim": snaps.dim, "t_range": [path.t0, path.t1], "head": cfg.head, **mlp}
    model = build_model(model_args)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    spec = cfg.spec()
    times = TimeSampler(cfg.time_sampling, path.t0, path.t1)
    history: list[tuple[int, float]] = []
    first_step, running = 0, 0.0

    partial = partial_path(checkpoint)
    if partial.exists():
        saved = torch.load(partial, map_location="cpu", weights_only=True)
        if _same_run(saved["config"], cfg):
            model.load_state_dict(saved["model"])
            ema.load_state_dict(saved["ema"])
            optimizer.load_state_dict(saved["optimizer"])
            gen.set_state(saved["generator"])
            times.second_moment, times.seen = saved["time_sampler"]
            history = [tuple(row) for row in saved["history"]]
            first_step, running = saved["step"], saved["running"]
            print(f"amcore train: resuming from step {first_step} ({partial})", file=sys.stderr)
        else:
            print(f"amcore train: {partial} is from another configuration; starting afresh", file=sys.stderr)

    def state(step: int) -> dict:
        return {
            "objective": cfg.objective,
            "model_args": model_args,
            "config": asdict(cfg),
            "step": step,
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": gen.get_state(),
            "time_sampler": (times.second_moment, times.seen),
            "history": history,
            "running": running,
        }

    interactive = sys.stderr.isatty()
    bar = tqdm(total=cfg.steps, initial=first_step, desc=f"train {cfg.objective}", disable=not interactive)
    start = time.perf_counter()
    for step in range(first_step, cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, cfg)
        if cfg.objective == "fm":
            loss = fm_loss(model, path, cfg.batch_size, gen, times)
        else:
            loss = action_loss(model, path, cfg.batch_size, gen, spec, times)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # EMA with warm-up: early averages do not drag the initial weights along in short runs.
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                p_ema.lerp_(p, 1 - decay)
        running += loss.item()
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            n = (step % cfg.log_every) + 1
            history.append((step + 1, running / n))
            running = 0.0
            if on_metrics:
                on_metrics(step + 1, {"loss": history[-1][1]})
            bar.set_postfix(loss=f"{history[-1][1]:.4g}")
            if not interactive:
                elapsed = time.perf_counter() - start
                print(f"step {step + 1}/{cfg.steps}  loss {history[-1][1]:.5g}  {elapsed:.0f}s", file=sys.stderr)
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            save_checkpoint(partial, state(step + 1))
        bar.update()
    bar.close()
    seconds = time.perf_counter() - start

    save_checkpoint(Path(checkpoint), state(cfg.steps))
    write_loss_csv(loss_csv, history)
    partial.unlink(missing_ok=True)
    done = cfg.steps - first_step
    return {"train_seconds": seconds, "final_loss": history[-1][1], "steps_per_second": done / max(seconds, 1e-9)}


def write_loss_csv(path: str | Path, history: list[tuple[int, float]]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "loss"])
        writer.writerows(history)
    os.replace(tmp, path)


def velocity_fn(model: nn.Module, objective: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The learned velocity (or drift, for eAM): ``grad_x s`` for AM variants, the field itself for FM."""
    if objective == "fm":
        return lambda x, t: model(x, t)
    return lambda x, t: potential_velocity(model, x, t)
