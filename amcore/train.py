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
from amcore.losses import LOSSES
from amcore.potentials import MLPField, potential_velocity
from amcore.store import Snapshots


@dataclass
class TrainConfig:
    objective: str = "am"
    coupling: str = "ot"
    steps: int = 4000
    batch_size: int = 512
    lr: float = 1e-3
    lr_final: float = 1e-5
    ema_decay: float = 0.999
    width: int = 128
    depth: int = 3
    activation: str = "silu"
    time_frequencies: int = 4
    ot_max_size: int = 5000
    seed: int = 0
    threads: int = 0
    log_every: int = 50

    def __post_init__(self) -> None:
        if self.objective not in LOSSES:
            raise ValueError(f"unknown objective {self.objective!r}; expected one of {sorted(LOSSES)}")


def build_model(model_args: dict) -> MLPField:
    """Rebuild a model from the arguments stored in its checkpoint."""
    args = dict(model_args)
    args["t_range"] = tuple(args["t_range"])
    return MLPField(**args)


def save_checkpoint(path: Path, payload: dict) -> None:
    """``torch.save`` to a temporary sibling, then rename: a killed job never leaves a half checkpoint."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_model(path: str | Path) -> tuple[MLPField, dict]:
    """The EMA weights of a finished training and its checkpoint metadata."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(payload["model_args"])
    model.load_state_dict(payload["ema"])
    model.eval()
    return model, payload


def cosine_lr(step: int, cfg: TrainConfig) -> float:
    progress = step / max(1, cfg.steps - 1)
    return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * progress))


def train(
    snaps: Snapshots,
    cfg: TrainConfig,
    checkpoint: str | Path,
    loss_csv: str | Path,
    on_metrics: Callable[[int, dict], None] | None = None,
) -> dict:
    """Fit the model of ``cfg.objective`` on ``snaps``; returns summary metrics of the run."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    path = SnapshotPath(snaps, cfg.coupling, cfg.ot_max_size, seed=cfg.seed)
    model_args = {
        "dim": snaps.dim,
        "out_dim": 1 if cfg.objective == "am" else snaps.dim,
        "t_range": [path.t0, path.t1],
        "width": cfg.width,
        "depth": cfg.depth,
        "activation": cfg.activation,
        "time_frequencies": cfg.time_frequencies,
    }
    model = build_model(model_args)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = LOSSES[cfg.objective]

    interactive = sys.stderr.isatty()
    bar = tqdm(total=cfg.steps, desc=f"train {cfg.objective}", disable=not interactive, file=sys.stderr)
    history: list[tuple[int, float]] = []
    running, start = 0.0, time.perf_counter()
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, cfg)
        loss = loss_fn(model, path, cfg.batch_size, gen)
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
        bar.update()
    bar.close()
    seconds = time.perf_counter() - start

    save_checkpoint(
        Path(checkpoint),
        {
            "objective": cfg.objective,
            "model_args": model_args,
            "ema": ema.state_dict(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": cfg.steps,
            "config": asdict(cfg),
        },
    )
    write_loss_csv(loss_csv, history)
    return {"train_seconds": seconds, "final_loss": history[-1][1], "steps_per_second": cfg.steps / seconds}


def write_loss_csv(path: str | Path, history: list[tuple[int, float]]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "loss"])
        writer.writerows(history)
    os.replace(tmp, path)


def velocity_fn(model: nn.Module, objective: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The learned velocity: ``grad_x s`` for AM, the field itself for Flow Matching."""
    if objective == "am":
        return lambda x, t: potential_velocity(model, x, t)
    return lambda x, t: model(x, t)
