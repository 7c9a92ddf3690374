"""The training loop: Adam with cosine decay, an EMA of the weights, atomic checkpoints, local metrics."""

from __future__ import annotations

import copy
import csv
import math
import os
import pickle
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from amcore.atomic import damaged_member, leased, replacing
from amcore.data.preprocess import FEATURE_SPREAD_RATIO
from amcore.data.store import Snapshots, store_identity
from amcore.data.times import uneven_times
from amcore.errors import InputError, TrainingDiverged
from amcore.models.integrate import interval_of, neighbour_distance
from amcore.models.potentials import PACE_RANGE, clock_rate_range, paced_clock
from amcore.models.trained import build_network
from amcore.paths.interpolants import MarginalPath, SnapshotPath, ot_pairs, say_bend_limit
from amcore.paths.stream import RefreshedPath, training_path
from amcore.training import choice
from amcore.training.config import TrainConfig
from amcore.training.losses import action_loss, fm_loss, torchcfm_loss, torchcfm_matcher
from amcore.training.speed import action_step, autocast, cpu_threads, keep_freed_memory, set_precision
from amcore.training.timesampling import TimeSampler
from amcore.version import code_version


def growth_length(cfg: TrainConfig, moments: tuple[np.ndarray, np.ndarray] | None) -> float | None:
    """The unbalanced coupling's length scale, uAM's own price of growth against motion: ``2 x_scale / sqrt(growth)``
    with the network's ``x_scale`` from the training cells' ``moments`` (:func:`training_moments`; None: the data's
    units, ``x_scale`` 1; ``interpolants``' module docstring). Read once per training, so that every path it builds
    (a streamed one's refreshes, the validation cells') prices growth alike; None for other couplings."""
    if cfg.path_coupling() != "unbalanced":
        return None
    scale = 1.0 if moments is None else float(np.sqrt(moments[1].mean()))
    # cells without spread: standard_units refuses them by name once the path is built; no length of 0 before that
    return 2.0 * (scale if math.isfinite(scale) and scale > 0 else 1.0) / math.sqrt(cfg.growth)


def snapshot_path(training: Snapshots, cfg: TrainConfig, seed: int, device: torch.device, tension: float | str,
                  velocity_weight: float | str, length: float | None = None) -> SnapshotPath:  # fmt: skip
    """The path ``cfg`` trains on through ``training``'s cells, of the given (or ``auto``) spline shape; ``length``:
    the unbalanced coupling's (:func:`growth_length`)."""
    eam = cfg.objective == "eam"
    cfg = _decided_stride(cfg, training)
    return SnapshotPath(
        training, cfg.path_coupling(), cfg.ot_max_size, seed=seed, device=device,
        # eAM's sigma_t schedule (the loss's and the integrator's) for the Brownian bridge and the entropic reg.
        sigma=cfg.sigma if eam else 0.0, sigma_final=cfg.sigma_final if eam else None,
        entropic_reg=cfg.entropic_reg, entropic_draws=cfg.entropic_draws,
        interpolation=cfg.interpolation, tension=tension, stride=cfg.stride, velocity_weight=velocity_weight,
        growth_length=length, progress=lambda line: _say_once(f"amcore train: {line}"),
    )  # fmt: skip


def kinetic_scale(path, objective: str, sigma: float, seed: int, clock=None) -> float:
    """A scale the loss of a converging run stays within, from samples of the path at its observed times.

    ``A = sum_k (|mu_{k+1} - mu_k|^2 + var_k + var_{k+1}) / dt_k`` is the kinetic action of straight lines between
    independently paired cells, an upper bound on the action of the exact-OT (geodesic) path; AM's population
    optimum is ``-A_flow / 2`` with ``A_flow`` the action of the flow through the path's marginals. Flow Matching's
    loss is a mean squared speed (``A / duration``); eAM's drift adds about ``sigma^4 d^2 / var`` per unit time (the
    score term of a Gaussian); uAM weights everything by the relative mass. A run whose loss goes orders of
    magnitude beyond this is exploiting finite samples (an objective unbounded below between or at the sampled
    cells), not learning the flow. ``clock``: a paced network's knots and levels, whose loss is in the clock's time
    (``potentials.clock_pace``): each interval's time is then its share of the clock times the span.
    """
    grid, means, variances, masses = _observed_moments(path, seed)
    grid = grid.double().numpy()
    if clock is not None:
        knots, levels = clock
        grid = np.interp(grid, knots, levels) * (knots[-1] - knots[0])
    action = sum(
        (float((means[j + 1] - means[j]).pow(2).sum()) + variances[j] + variances[j + 1]) / float(grid[j + 1] - grid[j])
        for j in range(len(grid) - 1)
    )
    if objective == "fm":
        return action / path.duration
    if objective == "eam":
        dim = means[0].numel()
        action += path.duration * sigma**4 * dim**2 / max(min(variances), 1e-12)
    return 0.5 * action * max(masses)


def _observed_moments(path, seed: int) -> tuple[torch.Tensor, list, list, list]:
    """The path's observed times (5 even ones for a simulator's) and, from 1,024 seeded samples at each, the
    mean, the summed variance and the mass."""
    gen = torch.Generator(getattr(path, "device", None) or "cpu").manual_seed(seed)
    t_values = getattr(path, "t_values", None)
    grid = torch.linspace(path.t0, path.t1, 5) if t_values is None else torch.as_tensor(t_values).float().cpu()
    means, variances, masses = [], [], []
    for t in grid.tolist():
        times = torch.full((1024,), t, device=gen.device)
        x, _ = path.sample_at(times, gen)
        x = x.double()
        means.append(x.mean(0))
        variances.append(float(x.var(0).sum()))
        masses.append(float(path.mass(times[:1]).max()))
    return grid, means, variances, masses


def motion_levels(snaps: Snapshots) -> tuple[list[float], list[float]] | None:
    """The training times and the clock's level at each (``potentials.TimeEmbedding``), or None where their gaps
    are within 5-fold of each other (``times.uneven_times``): half the time elapsed and half the distance the
    population has moved, each as a share of the whole. The distance is the W2 arc length of Gaussians with each
    time's mean and per-feature spreads (``|dm|^2 + sum (sd_b - sd_a)^2`` an interval), their sampling noise taken
    off (else many close times that barely move add it up). From every training cell, in float64: the same levels
    on every process, whether the cells are in memory, subsampled or streamed. Where the cells move uniformly it is
    ``t``'s own clock (a Gaussian path on times 0, 0.02, 0.05, 0.1, 0.2, 0.4, 0.7, 1: velocity error 0.075 / 0.063 /
    0.169 against 0.073 / 0.063 / 0.149); equal steps between the times gave 0.138 / 0.097 / 0.394, fitting the
    pairing noise of the shortest intervals. The half on ``t`` keeps every interval drawn where the cells barely
    move."""
    kept = snaps.training_snapshots()
    times = np.asarray(snaps.t_values, dtype=np.float64)[kept]
    if not uneven_times(times):
        return None
    moments = [_moments([snaps.x[snaps.offsets[k] : snaps.offsets[k + 1]]]) for k in kept]
    means, variances = [m for m, _ in moments], [v for _, v in moments]
    # the mean's noise; a standard deviation's is half of it
    noise = [float(v.sum()) / n for v, n in zip(variances, snaps.counts()[kept], strict=True)]
    steps = []
    for k in range(len(kept) - 1):
        shift = float(np.square(means[k + 1] - means[k]).sum()) - noise[k] - noise[k + 1]
        spread = float(np.square(np.sqrt(variances[k + 1]) - np.sqrt(variances[k])).sum())
        spread -= (noise[k] + noise[k + 1]) / 2
        steps.append(math.sqrt(max(shift, 0.0) + max(spread, 0.0)))
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    elapsed = (times - times[0]) / (times[-1] - times[0])
    moved = arc / arc[-1] if arc[-1] > 0 else elapsed
    return times.tolist(), [float(v) for v in 0.5 * moved + 0.5 * elapsed]


def observation_gap(path) -> float:
    """The median time between neighbouring observed times (a simulator's exact marginals: the whole span).

    Snapshots are taken about as often as the cells move by a fraction of their spread, so in ``x_scale`` per
    gap the network's velocity is of order one, whether there are 3 snapshots or 1,001 frames of an atom whose
    dipole turns 155 times over the span (config/hydrogen.yaml), and whatever unit the times are in.
    """
    t_values = getattr(path, "t_values", None)
    if t_values is None:
        return float(path.t1 - path.t0)
    return float(np.median(np.diff(torch.as_tensor(t_values).double().cpu().numpy())))


def clock_gap(knots: list[float], levels: list[float]) -> float:
    """The median gap between the training times on the clock (``motion_levels``), in the times' units: a paced
    potential's ``observation_gap``."""
    return float(np.median(np.diff(levels)) * (knots[-1] - knots[0]))


GROWTH_RANGE_DRAWS, GROWTH_RANGE_BATCH = 2**16, 2**13  # uAM: cells of the path its growth-rate range is read on
# uAM: the path's cells kept per interval between observed times (weighted pushes read how far a particle has left
# them: ``growth_support``), and the share of them the support's radius holds
SUPPORT_CELLS, SUPPORT_QUANTILE = 1024, 0.99
UNITS_CHUNK_ROWS = 2**16  # cells per chunk of the mean and variance that set the network's units


def standard_units(snaps: Snapshots | None, path, seed: int, moments=None) -> dict:
    """The network's units (``potentials.MLPField``): ``x_center`` and ``x_scale``, the training cells' mean and
    the root mean of their per-feature variances, and ``t_unit`` (``observation_gap``).

    From every training cell when the snapshots are given (the same numbers on every process; ``moments``: theirs,
    where already read), otherwise from seeded samples of the path at its observed times. Cells without any spread
    are refused.
    """
    if snaps is not None:
        mean, var = training_moments(snaps) if moments is None else moments
    else:
        _, means, variances, _ = _observed_moments(path, seed)
        stacked = torch.stack(means)
        mean = stacked.mean(0).cpu().numpy()
        var = (np.mean(variances) + float((stacked - stacked.mean(0)).pow(2).sum(1).mean())) / len(mean)
    scale = float(np.sqrt(np.mean(var)))
    if scale == 0:  # audit 16: it trained to a divergence "beyond 10 x 0" that blamed the learning rate
        raise InputError("the training cells have no spread: every cell of every training time is one point, so "
                         "there is no motion to learn (are the features all constant?)")  # fmt: skip
    spreads = np.sqrt(np.asarray(var, dtype=np.float64).reshape(-1))
    spread = spreads[spreads > 0]
    if len(spread) > 1 and spread.max() > FEATURE_SPREAD_RATIO * spread.min():
        print(f"amcore train: WARNING: the features' spreads range from {spread.min():.3g} to {spread.max():.3g}; "
              "with one length unit for all of them (distances, OT, the network's inputs) the smallest are nearly "
              "invisible: standardise the features (preprocess.standardize) unless their units are meant to be "
              "compared", file=sys.stderr)  # fmt: skip
    return {
        "x_center": [float(v) for v in mean],
        "x_scale": scale if math.isfinite(scale) and scale > 0 else 1.0,
        "t_unit": observation_gap(path),
    }


def training_moments(snaps: Snapshots) -> tuple[np.ndarray, np.ndarray]:
    """Each feature's mean and variance over the training times' cells: slices of the training times only
    (held-out cells never reach training), reduced chunk by chunk, with no copy of the cells and no float64 one,
    whether they are in memory or in the store."""
    kept = snaps.training_snapshots()
    return _moments([snaps.x[snaps.offsets[k] : snaps.offsets[k + 1]] for k in kept])


def _moments(blocks: list) -> tuple[np.ndarray, np.ndarray]:
    """Each feature's mean and variance over the rows of ``blocks`` (arrays in memory or in the store), reduced
    chunk by chunk in float64."""
    x = da.concatenate([da.asarray(block, chunks=(UNITS_CHUNK_ROWS, -1)) for block in blocks])
    mean, var = dask.compute(x.mean(0, dtype="float64"), x.var(0, dtype="float64"))
    return np.asarray(mean), np.asarray(var)


def save_checkpoint(path: Path, payload: dict) -> None:
    """A killed job never leaves a half checkpoint (``atomic.replacing``). Written through a handle: torch names
    the archive's folder after a path it is given, and the temporary name's process id made equal models differ
    byte for byte (audit 14)."""
    with replacing(path) as tmp, open(tmp, "wb") as handle:
        try:
            torch.save(payload, handle)
        except RuntimeError as err:  # torch's archive writer reports a failed write (a full disk) as a bare position
            if isinstance(err.__context__, OSError):
                raise OSError(err.__context__.errno, err.__context__.strerror, str(path)) from err
            raise


def cosine_lr(step: int, cfg: TrainConfig) -> float:
    """Cosine decay from ``lr`` to ``lr_final`` (constant when they are equal), ramped up linearly over the first
    ``warmup_steps`` (the AM paper's 5,000)."""
    progress = step / max(1, cfg.steps - 1)
    ramp = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    return ramp * (cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * progress)))


def adam(model: nn.Module, lr: float) -> torch.optim.Adam:
    """Adam as training runs it: one fused kernel for all parameters on CPU and CUDA, a quarter of the time of
    the default per-parameter loop (0.3 against 1.3 ms a step for the 4x256 MLP on one CPU thread)."""
    device = next(model.parameters()).device
    return torch.optim.Adam(model.parameters(), lr=lr, fused=device.type in ("cpu", "cuda"))


RESUME_IGNORES = ("threads", "log_every", "checkpoint_every")
STREAM_SEED_STRIDE = 1_000_003
VALIDATION_SEED = 7_777_777
VALIDATION_BATCHES = 4


class Cluster:
    """This process's place in a ``torchrun`` job (or a lone process): rank, world size, device.

    Gradients are averaged by DistributedDataParallel (NCCL on GPUs, gloo on CPUs).
    """

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
        if self.world > 1:
            _die_with_launcher()
        if self.world > 1 and not dist.is_initialized():
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor) / self.world

    def gather_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` (same shape everywhere) concatenated along its first axis, in rank order."""
        if self.world == 1:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def gather(self, items: list) -> list:
        """Every rank's ``items``, concatenated in rank order."""
        if self.world == 1:
            return items
        gathered: list = [None] * self.world
        dist.all_gather_object(gathered, items)
        return [item for part in gathered for item in part]

    def agree(self, value):
        """The first rank's ``value`` on every rank: one decision for the job (a streamed path's data key is each
        rank's own sample's, audit 56)."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)


def _die_with_launcher() -> None:
    """Stop this process when its launcher dies, however it dies: torchrun starts its workers in sessions of their
    own, so a ``kill -9`` of torchrun or of its process group left them training and writing ``model.pt`` beside a
    failed job, or beside the rerun's own training (audit 25). Linux's parent-death signal; elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    launcher = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != launcher:  # it died before the signal was asked for
        os.kill(os.getpid(), signal.SIGTERM)


def read_partial(partial: Path, device: torch.device | str = "cpu") -> dict:
    """The resumable state at ``partial``; one that cannot be read is an error, and is kept, not deleted: it may be
    the only copy of a long run's progress (a disk that filled up, a copy still arriving); the user decides."""
    try:
        saved = torch.load(partial, map_location=device, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise InputError(
            f"{partial}: the resumable state of an interrupted training cannot be read (truncated or damaged: "
            f"{type(err).__name__}); delete it to start the training over"
        ) from err
    if damaged := damaged_member(partial):  # torch.load checks no checksum: damaged weights would resume
        raise InputError(f"{partial}: the resumable state of an interrupted training is damaged ({damaged} fails its "
                         "checksum); delete it to start the training over")  # fmt: skip
    return saved


def partial_path(checkpoint: str | Path) -> Path:
    """Where a running training keeps its resumable state: beside, never instead of, the final checkpoint."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".partial")


RESUME_NEWER = ("time_clock",)  # settings a partial saved before they existed may lack: its model_args decide


def _same_run(saved: dict, cfg: TrainConfig) -> bool:
    """Whether a partial state was saved by a training of this config. Only the settings of :data:`RESUME_NEWER`
    may be missing from it (their effect is in the network's ``model_args``, compared too); any other missing key
    is a difference (review 55: ``velocity_weight`` changes no ``model_args``)."""
    current = asdict(cfg)
    return all(saved[k] == v if k in saved else k in RESUME_NEWER for k, v in current.items()
               if k not in RESUME_IGNORES)  # fmt: skip


class Run:
    """One training's state, built once: the data path, the networks, the optimiser, the random streams and the
    loss history; ``state`` is what a checkpoint holds and ``resume`` reads it back."""

    def __init__(self, snaps: Snapshots | None, cfg: TrainConfig, path: SnapshotPath | MarginalPath | None) -> None:
        cfg = _decided_stride(cfg, snaps)
        self.cfg, self.cluster = cfg, Cluster()
        device = self.cluster.device
        set_precision(device, cfg.tf32)
        if self.cluster.leader:  # on a cluster, the first thing to check: did the job get the GPU it asked for?
            threads = f"{torch.get_num_threads()} threads each"
            where = torch.cuda.get_device_name(device) if device.type == "cuda" else threads
            print(f"amcore train: {self.cluster.world} process(es) on {device.type} ({where})", file=sys.stderr)
        # The global batch is ``streams`` sub-batches, each from its own seeded generator; each rank draws its
        # share. One process with streams=N therefore takes exactly the steps of N ranks.
        world, rank = self.cluster.world, self.cluster.rank
        self.streams = cfg.streams_of(world)
        self.mine = range(rank * self.streams // world, (rank + 1) * self.streams // world)
        self.gens = [torch.Generator(device).manual_seed(cfg.seed + STREAM_SEED_STRIDE * s) for s in self.mine]
        self.sub_batch = cfg.batch_size // self.streams
        torch.manual_seed(cfg.seed)
        self.tension, self.velocity_weight = cfg.tension, cfg.velocity_weight
        held = None
        if cfg.validation > 0:
            if snaps is None:
                raise ValueError("validation holds cells of the snapshots apart: it needs snapshots, not a given path")
            try:
                snaps, held = snaps.split_cells(cfg.validation, cfg.seed)
            except ValueError as err:
                raise ValueError(f"validation: {err}: raise or lower validation, or set it to 0") from err
            # the held-out times' cells never choose the checkpoint (review 49: the validation path ran through them)
            held = held.drop_times(held.attrs.get("holdout_times", []))
        # the training cells' moments, read once (a pass over the store): the network's units and the unbalanced
        # coupling's length
        moments = training_moments(snaps) if snaps is not None and cfg.units == "standard" else None
        self.growth_length = growth_length(cfg, moments)
        self.path = path or training_path(snaps, self._snapshot_path, cfg.in_memory_max_mb, cfg.ot_max_size,
                                          cfg.stream_refresh_every, cfg.seed, rank, cfg.ot_refresh_every,
                                          cfg.path_coupling())  # fmt: skip
        if self.cluster.leader and spline_tensions(self.path) is not None:
            say_bend_limit(self.path.t_values.cpu().numpy(), self.tension, spline_tensions(self.path))
        if cfg.pathwise and isinstance(self.path, MarginalPath):
            raise ValueError("pathwise regresses on the velocities of pairs of cells; a simulator's exact marginals "
                             "pair none: set pathwise 0 or train on snapshots")  # fmt: skip
        # Cells never fitted, on the same kind of path: the objective there picks the checkpoint (``validate``).
        self.validation_path = None
        if held is not None:
            self.validation_path = self._snapshot_path(held.in_memory(), cfg.seed + VALIDATION_SEED)
        self.best: dict | None = None
        self.head_choice: dict | None = None  # how head 'auto' chose, where it did
        self.stride_choice: dict | None = None  # how stride 'auto' chose, where it did
        self.data_key = self.path.fingerprint()  # a partial checkpoint resumes only the same data
        self.feature_names = snaps.attrs.get("feature_names") if snaps is not None else None
        # How the input's cells were brought into these coordinates: ``TrainedModel.preprocess`` applies it to new ones.
        self.preprocess = snaps.attrs.get("preprocess", {"config": None}) if snaps is not None else None
        self.store_key = store_identity(snaps.attrs) if snaps is not None else None  # used only on this store
        # Where the input's cells came from (an AnnData's X, layer or obsm entry): what TrainedModel.preprocess reads.
        provenance = (snaps.attrs.get("provenance") or {}) if snaps is not None else {}
        self.input_key = provenance.get("reader", {}).get("x_key")
        # The input file's SHA-256 (none for simulated data): which data a checkpoint was trained on, from it alone.
        self.data_sha256 = provenance.get("sha256")
        # The observed times trained on (the store's held-out ones left out): a held-out prediction made with this
        # model is refused where they include its held-out time (``TrainedModel.trained_times``).
        self.trained_times = None
        if snaps is not None:
            kept = snaps.training_snapshots()
            self.trained_times = [float(snaps.t_values[k]) for k in kept]
        mlp = {"width": cfg.width, "depth": cfg.depth, "activation": cfg.activation}
        mlp |= {"dim": self.path.dim, "t_range": [self.path.t0, self.path.t1], "time_frequencies": cfg.time_frequencies}
        if cfg.time_periods:
            mlp["time_periods"] = [float(p) for p in cfg.time_periods]
        # The clock of the population's motion (potentials.TimeEmbedding), for the network and the draws over time
        # alike; gaps within 5-fold of each other (and a simulator's exact marginals: no observed times) keep t's.
        self.knots = self.levels = None
        if cfg.time_clock == "motion" and snaps is not None and (clock := motion_levels(snaps)) is not None:
            self.knots, self.levels = clock
            mlp |= {"time_knots": self.knots, "time_levels": self.levels}
        if self.cluster.leader and cfg.time_clock == "motion" and snaps is not None:  # audit 55: said nowhere
            shown = ", ".join(f"{t:g}: {u:.2f}" for t, u in zip(self.knots or [], self.levels or [], strict=True))
            print("amcore train: time clock: " + (f"with the population's motion ({shown})" if self.knots else
                  "t's own (the training times' gaps are within 5-fold of each other)"), file=sys.stderr)  # fmt: skip
        fm = cfg.objective == "fm"
        head = {"kind": "field", "out_dim": self.path.dim} if fm else {"kind": "potential", "head": cfg.head}
        units = standard_units(snaps, self.path, cfg.seed, moments) if cfg.units == "standard" else {}
        # On a clock whose rates span more than 10-fold the network is paced (potentials.clock_pace): it moves cells
        # per unit of the clock, and its time unit is the training times' median gap on the clock. TorchCFM's loss
        # is the package's own, in t: its field is not.
        paceable = self.knots is not None and cfg.implementation != "torchcfm"
        if paceable and paced_clock(self.knots, self.levels):
            head["paced"] = True
            if units:
                units["t_unit"] = clock_gap(self.knots, self.levels)
            if self.cluster.leader:
                print(f"amcore train: the network is paced by the clock (its intervals' rates "
                      f"{clock_rate_range(self.knots, self.levels):.0f}-fold apart, more than {PACE_RANGE:g}): the "
                      "logged loss is in the clock's time (docs/training.md)", file=sys.stderr)  # fmt: skip
        self.model_args = {**head, **mlp, **units}
        # uAM's growth rate is growth * s / growth_unit: in standard units s / x_scale^2 is a rate (1/t), so growth
        # is the same number for data in micrometres or in millions; 1 in the data's own units.
        self.growth_unit = units.get("x_scale", 1.0) ** 2
        self.spec = replace(cfg.spec(), growth=cfg.growth / self.growth_unit)
        self.model = build_network(self.model_args).to(device)
        # AM's loss is in units of the potential (x^2 / t), Flow Matching's of a squared velocity (x^2 / t^2).
        self.loss_unit = self.model.gain**2 if fm else self.model.gain
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.net = DistributedDataParallel(self.model) if world > 1 and fm else self.model
        self.optimizer = adam(self.model, cfg.lr)
        # FM's loss is first order: fused and compile concern the AM objectives only.
        self.action = None if fm else action_step(self.model, self.spec, cfg.fused, cfg.compile, world > 1)
        self.matcher = None
        if cfg.implementation == "torchcfm":
            if not hasattr(self.path, "draw"):
                raise ValueError("implementation 'torchcfm' pairs cells of observed times: it needs snapshots, not "
                                 "a simulator's exact marginals")  # fmt: skip
            self.matcher = torchcfm_matcher(cfg.coupling, cfg.torchcfm_sigma)
        self.times = TimeSampler(cfg.time_sampling, self.path.t0, self.path.t1, device=device, knots=self.knots,
                                 levels=self.levels)  # fmt: skip
        paced = (self.knots, self.levels) if self.model_args.get("paced") else None
        self.scale = kinetic_scale(self.path, cfg.objective, max(cfg.sigma, cfg.sigma_final or 0.0), cfg.seed, paced)
        self.history: list[tuple[int, float]] = []
        # The loss summed since the last log line stays on the device: reading it every step (.item()) would make
        # each GPU step wait for the previous one; float64, as a Python float sum would be.
        self.first_step, self.running = 0, torch.zeros((), dtype=torch.float64, device=device)

    def _snapshot_path(self, training: Snapshots, seed: int) -> SnapshotPath:
        """The path between the snapshots; tension "auto" is decided on the first build (a streamed path's
        refreshes keep it)."""
        built = snapshot_path(training, self.cfg, seed, self.cluster.device, self.tension, self.velocity_weight,
                              self.growth_length)  # fmt: skip
        self.tension = getattr(built, "tension", self.tension)
        self.velocity_weight = getattr(built, "velocity_weight", self.velocity_weight)
        return built

    def resume(self, partial: Path) -> None:
        """Continue from ``partial`` when it holds this configuration on this data; start afresh otherwise."""
        if not partial.exists():
            return
        saved = read_partial(partial, self.cluster.device)
        differs = [what for what, same in (
            ("the configuration", _same_run(saved["config"], self.cfg)), ("the data", saved["data"] == self.data_key),
            # where both came from amcore prepare: the input file's sha256, its preprocessing, the held-out times
            ("the store", None in (saved.get("store"), self.store_key) or saved["store"] == self.store_key),
            ("the network", saved["model_args"] == self.model_args),
            ("the number of streams", len(saved["generators"]) == self.streams),
            # a partial from before the count was kept: as before, the streams decide
            ("the number of processes", saved.get("processes", self.cluster.world) == self.cluster.world),
        ) if not same]  # fmt: skip
        # One decision for every rank, the first's: each deciding alone, a streamed training resumed on rank 0 and
        # started afresh on rank 1, wrote a wrong model.pt and hung (audit 56).
        differs = self.cluster.agree(differs)
        if differs:
            if self.cluster.leader:
                print(f"amcore train: {partial} is from another training ({', '.join(differs)} differ); starting "
                      "afresh", file=sys.stderr)  # fmt: skip
            return
        self.model.load_state_dict(saved["model"])
        self.ema.load_state_dict(saved["ema"])
        self.optimizer.load_state_dict(saved["optimizer"])
        for gen, s in zip(self.gens, self.mine, strict=True):
            gen.set_state(saved["generators"][s].cpu())
        self.times.second_moment, self.times.seen = saved["time_sampler"]
        self.history = [tuple(row) for row in saved["history"]]
        self.best = saved.get("best")
        self.first_step = saved["step"]
        self.running.fill_(saved["running"])
        if self.cluster.leader:
            print(f"amcore train: resuming from step {self.first_step} ({partial})", file=sys.stderr)

    def growth_range(self, ema: dict, draws: int = GROWTH_RANGE_DRAWS) -> tuple[list[float], dict | None]:
        """The lowest and highest growth rate (``growth * s / x_scale^2``) of the ``ema`` weights at ``draws`` cells
        of the training path, at seeded times uniform on the training's clock (on ``t``'s, the fast first hours of
        log-spaced times held 2 % of them): the rates the loss fitted; and the same within each interval between
        observed times, ``{"knots": times, "ranges": [[lo, hi], ...]}`` (None on a simulator's path). ``TrainedModel``
        holds pushed particles within the range of the interval they are in, since beyond the path's cells a growth
        rate is extrapolation (a heavy-tailed cell that flew off the data took a rate 35 times the path's largest
        there, and the whole population's mass; on TIGON EMT a cell that left the data in the long last interval
        took the rate of the short first one, 42 per unit time, and ten thousand times the population's mass)."""
        network = copy.deepcopy(self.ema)
        network.load_state_dict(ema)
        gen = torch.Generator(self.gens[0].device).manual_seed(self.cfg.seed)
        times = TimeSampler("uniform", self.path.t0, self.path.t1, device=gen.device, knots=self.knots,
                            levels=self.levels)  # fmt: skip
        knots = getattr(self.path, "t_values", None)
        lo = torch.full((1 if knots is None else len(knots) - 1,), float("inf"), device=gen.device)
        hi = -lo
        for start in range(0, draws, GROWTH_RANGE_BATCH):
            n = min(GROWTH_RANGE_BATCH, draws - start)
            t, _ = times.sample(n, gen)
            x, _ = self.path.sample_at(t, gen)
            with torch.no_grad():
                rate = self.spec.growth * network(x, t)
            if not torch.isfinite(rate).all():  # a bound of NaN would clamp every push to NaN, silently
                raise TrainingDiverged("uam training ended with a growth rate that is NaN or inf on its own path")
            k = torch.zeros_like(t, dtype=torch.long) if knots is None else interval_of(knots, t)
            lo = lo.scatter_reduce(0, k, rate.reshape(-1), "amin")
            hi = hi.scatter_reduce(0, k, rate.reshape(-1), "amax")
        whole = [float(lo.min()), float(hi.max())]
        if knots is None:
            return whole, None
        seen = torch.isfinite(lo)  # an interval no time fell in keeps the whole range
        lo, hi = torch.where(seen, lo, whole[0]), torch.where(seen, hi, whole[1])
        ranges = {"knots": [float(v) for v in knots], "ranges": torch.stack([lo, hi], 1).tolist()}
        return whole, ranges | {"support": self.growth_support(knots, gen)}

    def growth_support(self, knots: torch.Tensor, gen: torch.Generator) -> dict:
        """Where the training path's cells lie in each interval between observed times, for weighted pushes to tell
        a particle that left them (``TrainedModel``: there its growth is held to the population's): ``cells``,
        ``SUPPORT_CELLS`` of the path's cells at seeded times uniform in each interval (intervals x cells x
        features), ``radius``, the ``SUPPORT_QUANTILE`` of their distances to their fifth nearest other
        (``neighbour_distance``: the same distance a particle is measured by, so the path's own cells are within it
        but 1 %), and ``rate``, the population's growth rate in the interval (``d log mass / dt`` of the total's
        log-linear course). A particle beyond the path's cells takes rates fitted nowhere near it: on TIGON EMT one
        cell pushed off the data grew 16,000-fold and carried 99 % of the mass."""
        cells, radius, rate = [], [], []
        for k in range(len(knots) - 1):
            t = knots[k] + (knots[k + 1] - knots[k]) * torch.rand(SUPPORT_CELLS, generator=gen, device=gen.device)
            x, _ = self.path.sample_at(t, gen)
            cells.append(x.float().cpu())
            radius.append(float(torch.quantile(neighbour_distance(x, x, among_themselves=True), SUPPORT_QUANTILE)))
            rate.append(float(self.path.log_mass_rate(t[:1])[0]))
        return {"cells": torch.stack(cells), "radius": radius, "rate": rate}

    def interpolant(self) -> dict | None:
        """The spline path's shape as trained (``auto`` resolved on the training times, and each interval's tension
        after the bend limit); None for other paths."""
        if self.cfg.interpolation != "spline":
            return None
        shape = {"tension": self.tension, "velocity_weight": self.velocity_weight}
        if (tensions := spline_tensions(self.path)) is not None:
            shape["tension_by_interval"] = [round(float(v), 4) for v in tensions]
        return shape

    def state(self, step: int) -> dict:
        """Everything a checkpoint holds (every rank's generators gathered)."""
        return {
            "objective": self.cfg.objective, "model_args": self.model_args, "config": asdict(self.cfg),
            "growth_unit": self.growth_unit,
            "feature_names": self.feature_names, "data": self.data_key, "step": step, "times": self.trained_times,
            "store": self.store_key, "preprocess": self.preprocess, "input_key": self.input_key,
            "interpolant": self.interpolant(),
            "model": self.model.state_dict(), "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
            "generators": self.cluster.gather([gen.get_state() for gen in self.gens]),
            "time_sampler": (self.times.second_moment, self.times.seen), "history": self.history,
            "running": float(self.running), "best": self.best, "head_choice": self.head_choice,
            "stride_choice": self.stride_choice,
            "code": code_version(), "data_sha256": self.data_sha256, "processes": self.cluster.world,
        }  # fmt: skip

    def validate(self, step: int, on_metrics: Callable[[int, dict], None] | None) -> None:
        """The objective of the EMA weights on the validation cells (the same draws every time, so checkpoints are
        compared on equal terms); the lowest so far is kept as ``best``, the weights training ends with.

        AM's loss is ``1/2 E int |grad s - grad s*|^2`` up to a constant, with ``s*`` the path's own potential: on cells
        the network never fitted it measures the distance to a field whose sampling noise is independent of the
        training cells', so it rises once the network starts fitting the training cells' noise."""
        cfg, device = self.cfg, self.cluster.device
        gen = torch.Generator(device).manual_seed(cfg.seed + VALIDATION_SEED)
        times = TimeSampler("stratified", self.validation_path.t0, self.validation_path.t1, device=device,
                            knots=self.knots, levels=self.levels)  # fmt: skip
        total = 0.0
        for _ in range(VALIDATION_BATCHES):
            if cfg.objective == "fm":
                with torch.no_grad():
                    loss = fm_loss(self.ema, self.validation_path, cfg.batch_size, gen, times)
            else:
                loss = action_loss(self.ema, self.validation_path, cfg.batch_size, gen, self.spec, times)
            total += float(loss.detach()) / VALIDATION_BATCHES
        # A non-finite loss is never the best: it would keep weights that score as nothing at all.
        if math.isfinite(total) and (self.best is None or total < self.best["loss"]):
            ema = {k: v.detach().clone() for k, v in self.ema.state_dict().items()}
            self.best = {"loss": total, "step": step, "ema": ema}
        if on_metrics and self.cluster.leader:
            on_metrics(step, {"validation_loss": total})
        if self.cluster.leader and not sys.stderr.isatty():
            lowest = (
                "none finite yet"
                if self.best is None
                else f"lowest {self.best['loss']:.5g} at step {self.best['step']}"
            )
            print(f"step {step}/{cfg.steps}  validation loss {total:.5g}  ({lowest})", file=sys.stderr)

    def loss(self, gen: torch.Generator) -> torch.Tensor:
        """One stream's minibatch loss: the AM objective's, amcore's Flow Matching or TorchCFM's."""
        if self.action is not None:
            return self.action(self.path, self.sub_batch, gen, self.times)
        if self.matcher is not None:
            return torchcfm_loss(self.net, self.path, self.matcher, self.sub_batch, gen)
        return fm_loss(self.net, self.path, self.sub_batch, gen, self.times)

    def step(self, step: int) -> None:
        """One optimiser step on the global batch, then the EMA (with warm-up: early averages do not drag the
        initial weights along in short runs)."""
        cfg = self.cfg
        if isinstance(self.path, RefreshedPath):
            self.path.seek(step)
        for group in self.optimizer.param_groups:
            group["lr"] = cosine_lr(step, cfg)
        if cfg.compile and self.action is not None:  # imported on demand: inductor costs 1.7 s to import on a CPU
            torch.compiler.cudagraph_mark_step_begin()  # a new step: a compiled loss's CUDA graphs may reuse memory
        with autocast(self.cluster.device, cfg.bf16):
            parts = [self.loss(gen) for gen in self.gens]
        self.times.commit(self.cluster.gather_tensor)  # every stream of every rank, as one process would
        loss = torch.stack(parts).mean()
        self.optimizer.zero_grad(set_to_none=True)
        (loss / self.loss_unit).backward()  # the network's own units: Adam's eps and grad_clip mean the same
        if cfg.grad_clip is not None:  # the AM paper clips the global gradient norm at 1
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
                p_ema.lerp_(p, 1 - decay)
        self.running += loss.detach()

    def log(self, step: int, on_metrics: Callable[[int, dict], None] | None, partial: Path) -> float:
        """Close the log interval ending after ``step``: its mean loss over every rank goes to the history and
        ``on_metrics``; a diverged loss stops the training (``TrainingDiverged``) and removes ``partial``."""
        n = (step % self.cfg.log_every) + 1
        self.history.append((step + 1, self.cluster.mean(float(self.running)) / n))
        self.running.zero_()
        report = on_metrics if on_metrics and self.cluster.leader else lambda step, metrics: None
        report(step + 1, {"loss": self.history[-1][1]})
        if problem := divergence(self.history, self.scale, self.cfg.divergence_factor):
            report(step + 1, {"diverged_at_step": step + 1})
            partial.unlink(missing_ok=True)  # resuming it would only diverge again
            self.cluster.close()
            raise TrainingDiverged(f"{self.cfg.objective} training stopped at step {step + 1}: {problem}")
        return self.history[-1][1]


TRAINING = "a training of this model"  # who holds a checkpoint's lease, in a refusal


@torch.inference_mode(False)  # a notebook's torch.inference_mode or no_grad around it (audit 85)
@torch.enable_grad()
def train(
    snaps: Snapshots | None,
    cfg: TrainConfig,
    checkpoint: str | Path,
    loss_csv: str | Path | None = None,
    on_metrics: Callable[[int, dict], None] | None = None,
    path: SnapshotPath | MarginalPath | None = None,
) -> dict:
    """Fit the model of ``cfg.objective`` on ``snaps`` (or on ``path`` when given); returns summary metrics.
    ``amcore.load(checkpoint)`` is the trained model; ``loss_csv`` (default: ``model.pt`` -> ``model.csv``, else
    the checkpoint's name plus ``.csv``) gets the loss every ``log_every`` steps, and ``on_metrics(step, metrics)``
    is called with it as it goes.

    Every ``checkpoint_every`` steps the whole state (weights, EMA, optimiser, RNG, time sampler, loss
    history) goes atomically to ``<checkpoint>.partial``; a rerun after a kill resumes from it and ends
    with the same parameters as an uninterrupted run. A loss that turns non-finite or diverges raises
    ``TrainingDiverged`` and leaves nothing behind. While it runs, ``<checkpoint>.running`` names its process, and a
    second training of the same checkpoint meanwhile raises ``AlreadyRunning``. Torch's thread count is restored
    afterwards.
    """
    if snaps is None and path is None:
        raise InputError("train: no snapshots: give amcore.Snapshots.from_labels(x, time) or amcore.read_store(store)")
    if snaps is not None and not isinstance(snaps, Snapshots):
        raise InputError(f"train: snapshots must be amcore.Snapshots, got {type(snaps).__name__}: group cells by "
                         "time with amcore.Snapshots.from_labels(x, time), or read a store with "
                         "amcore.read_store")  # fmt: skip
    if not isinstance(cfg, TrainConfig):
        raise InputError(f"train: the config must be an amcore.TrainConfig, got {type(cfg).__name__}: "
                         "amcore.TrainConfig(**settings), or TrainConfig.from_params(settings) to have a typo "
                         "named")  # fmt: skip
    if loss_csv is None:  # model.pt -> model.csv; any other name gets .csv added (run.1 and run.2 never share one)
        checkpoint = Path(checkpoint)
        loss_csv = checkpoint.with_suffix(".csv") if checkpoint.suffix == ".pt" else f"{checkpoint}.csv"
    _check_training_inputs(snaps, cfg, Path(checkpoint), Path(loss_csv))
    if snaps is not None and (note := _mass_change(snaps) if cfg.objective != "uam" else _counts_note(snaps)):
        _say_once(note)
    # the note is the first rank's; stride auto is every rank's (each decides alike, from the same seeded halves)
    wanted = snaps is not None and (os.environ.get("RANK", "0") == "0" or cfg.stride == "auto")
    ratios, looked_at = _motion_ratios(snaps) if wanted else ([], 0)
    if note := _motion_note(ratios, looked_at):
        _say_once(note)
    if stride_choice := _auto_stride(cfg, ratios):
        cfg = replace(cfg, stride=stride_choice["stride"])  # every candidate and the model train on the same path
        if (median := stride_choice["median_ratio"]) is not None:
            _say_once(f"amcore train: stride auto: {cfg.stride} (over the median of {stride_choice['looked_at']} "
                      f"training intervals looked at, OT pairs cells {median:.3g} times as far, squared, as it pairs "
                      f"two halves of one time: chords over two intervals under {STRIDE_NOISE:g})")  # fmt: skip
    if snaps is not None and cfg.objective == "eam":
        _say_once(_sigma_units(snaps))
        if note := _sigma_spread(snaps, cfg):
            _say_once(note)
    # One training per checkpoint at a time, the first rank's lease for the job: a rerun beside a training left
    # running by a Snakemake killed with kill -9 resumed from the same state, and both wrote it
    lease = leased(checkpoint, TRAINING) if os.environ.get("RANK", "0") == "0" else nullcontext()
    threads = torch.get_num_threads()
    with lease:
        try:
            chosen = None
            if cfg.head == "auto":
                chosen = _chosen_before(snaps, cfg, partial_path(checkpoint))
                chosen = chosen or _choose_head(snaps, cfg, Path(checkpoint), path)
                cfg = replace(cfg, head=chosen["head"])
            stride = {"stride": cfg.stride} if stride_choice else {}
            if cfg.growth == "auto":
                return _choose_growth(snaps, cfg, Path(checkpoint), Path(loss_csv), path) | stride
            summary = _fit(snaps, cfg, checkpoint, loss_csv, on_metrics, path, chosen, stride_choice=stride_choice)[0]
            if os.environ.get("RANK", "0") == "0":  # an interrupted head or growth auto's candidates (review 81)
                for head in HEAD_CANDIDATES:
                    partial_path(_candidate(Path(checkpoint), head)).unlink(missing_ok=True)
                for growth in choice.GROWTHS:
                    _remove_candidate(*_growth_candidate(Path(checkpoint), growth))
            return summary | (chosen or {}) | stride
        finally:
            torch.set_num_threads(threads)  # a notebook's torch keeps its own threads after train(threads=1)


MASS_CHANGE = 2.0  # a balanced objective is told when the training times' masses change more than this many-fold
EQUAL_COUNTS = 1.1  # uAM is told when the training times' counts are within this factor: no net growth learned
SIGMA_SPREAD = 5.0  # eAM is told when its noise alone spreads a cell farther than this many of the cells' spreads


def _mass_change(snaps: Snapshots) -> str | None:
    """A note when the training times' masses (their cells' weights, else the cell counts) change more than
    ``MASS_CHANGE``-fold: AM, eAM and FM conserve mass, so where they follow the population, growth and death are
    read as movement (audit 8: a dying population's cells were moved into the growing one)."""
    masses = snaps.masses()[snaps.training_snapshots()]
    if not (np.isfinite(masses).all() and masses.min() > 0):
        return None  # nothing a ratio can say (a time of zero weight is uAM's business, not this note's)
    fold = float(masses.max() / masses.min())
    if fold <= MASS_CHANGE:
        return None
    weighted = snaps.weights is not None
    source = snaps.attrs.get("provenance", {}).get("source")
    advice = "" if weighted or source == "simulate" else (
        " (when the counts do not follow the population, give its sizes: dataset.population, or from_labels' "
        "weights)")  # fmt: skip
    what = "masses (their cells' weights)" if weighted else "cell counts"
    return (f"amcore train: note: the training times' {what} change {fold:.3g}-fold; this objective conserves mass, "
            "so if they follow the population, growth and death are learned as movement between cells: objective uam "
            f"models them{advice}")  # fmt: skip


def _counts_note(snaps: Snapshots) -> str | None:
    """A note for uAM on the training times' cell counts (no weights given), which it reads as the population's size:
    where they are equal (within ``EQUAL_COUNTS``), the common design of a fixed number of cells sequenced per time,
    it learns no net growth (audit 72: a population growing 5-fold, 600 cells a day, learned its growing cluster
    dying, with perfect mass scores); where they turn, falling then rising or rising then falling, each by more than
    ``MASS_CHANGE``-fold, they are likelier the cells captured per time (audit 38: counts 1000, 250, 200, 800 of one
    drifting law, and uAM learned a 4-fold death then a 4-fold growth, with no word)."""
    if snaps.weights is not None or snaps.attrs.get("provenance", {}).get("source") == "simulate":
        return None
    counts = snaps.masses()[snaps.training_snapshots()]
    if counts.max() <= EQUAL_COUNTS * counts.min():
        shown = f"{counts[0]:.0f} each" if counts.min() == counts.max() else f"{counts.min():.0f} to {counts.max():.0f}"
        return (f"amcore train: note: uam reads the training times' cell counts as the population's size, and they "
                f"are about equal ({shown}, within {EQUAL_COUNTS - 1:.0%}): it learns no net growth, only growth in "
                "some cells balanced by death in others. Where a fixed number of cells was sequenced per time, give "
                "the population's sizes (dataset.population, or from_labels' weights)")  # fmt: skip
    ratios = counts[1:] / counts[:-1]
    swings = np.sign(np.log(ratios[(ratios > MASS_CHANGE) | (ratios < 1 / MASS_CHANGE)]))
    if not (swings[1:] != swings[:-1]).any():
        return None
    shown = ", ".join(f"{c:.0f}" for c in counts)
    course = " then ".join("growth" if sign > 0 else "death" for k, sign in enumerate(swings) if not k or
                           sign != swings[k - 1])  # fmt: skip
    # audit 59: said as a doubt with "use am", it met a population that really rose and fell, where uAM did best
    return (f"amcore train: note: uam reads the training times' cell counts as the population's size, and they turn "
            f"(down then up, or up then down), each more than {MASS_CHANGE:g}-fold ({shown}): it learns {course}. "
            "Right where the counts follow the population; where they are the cells captured per time, give "
            "the population's sizes (dataset.population, or from_labels' weights), or use a balanced objective "
            "(am)")  # fmt: skip


MOTION_NOISE = 1.75  # an interval whose pairs' median squared length is under this many times two halves' is named
MOTION_CELLS = 500  # cells a side at most, for each of those distances (1,000 took 3-4 s on 10 intervals)
MOTION_INTERVALS = 12  # training intervals looked at, at most (evenly spread): 1,001 frames are read in seconds


def _uniform_cells(snaps: Snapshots, k: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` cells of time ``k`` drawn uniformly, in float64: a store's first ``n`` (each time's rows are in seeded
    random order, so a contiguous read is a uniform sample), else seeded rows of an input that may be sorted."""
    start, count = int(snaps.offsets[k]), int(snaps.counts()[k])
    if snaps.attrs.get("row_order", {}).get("within_time") in ("random", "simulated"):
        return np.asarray(snaps.x[start : start + n], dtype=np.float64)
    rows = np.asarray(snaps.x[start + np.sort(rng.choice(count, n, replace=False))], dtype=np.float64)
    return rows[rng.permutation(n)]  # read in order, returned in none: any slice of them is uniform too


def _paired_median(a: np.ndarray, b: np.ndarray) -> float:
    """The median squared length of the pairs the exact OT plan between two clouds of equal size draws (a
    permutation). The median, not the mean (squared W2): where cells sit in branches far apart, two halves hold
    their shares by chance, and the few cells the plan must then carry between branches made W2 of halves as large
    as a real interval's motion (audit 91: a well-resolved branching step read 1.38, and 1.1 to 3.2 with the draw
    of halves; the median read 5.9 to 6.3)."""
    rows, cols, weights = ot_pairs(a, b, len(a), np.random.default_rng(0))
    squared = ((a[rows] - b[cols]) ** 2).sum(1)
    order = np.argsort(squared)
    return float(squared[order][np.searchsorted(np.cumsum(weights[order]), 0.5)])


def _motion_ratios(snaps: Snapshots) -> tuple[list[tuple[float, float, float]], int]:
    """Over up to ``MOTION_INTERVALS`` training intervals (evenly spread), the median squared length of the OT pairs
    between halves of the two times over that between two halves of one time (:func:`_paired_median`), as ``(t_a,
    t_b, ratio)``; and how many intervals were looked at. The held-out times are dropped first: they never reach the
    note or ``stride: auto``. Halves of at most ``MOTION_CELLS`` cells (an interval of under 5 cells a half is not
    looked at: two halves of a few cells say nothing either way); a ratio of a few hundred cells moves with the draw."""
    kept = snaps.training_snapshots()
    if len(kept) < 2:
        return [], 0
    rng, counts, ratios = np.random.default_rng(0), snaps.counts(), []
    chosen = np.unique(np.linspace(0, len(kept) - 2, min(MOTION_INTERVALS, len(kept) - 1)).round().astype(int))
    for j in chosen:
        a, b = kept[j], kept[j + 1]
        n = min(MOTION_CELLS, int(counts[a]) // 2, int(counts[b]) // 2)
        if n < 5:
            continue
        (a1, a2), (b1, b2) = (np.split(_uniform_cells(snaps, k, 2 * n, rng), 2) for k in (a, b))
        noise = (_paired_median(a1, a2) + _paired_median(b1, b2)) / 2
        ratio = _paired_median(a1, b1) / noise if noise > 0 else math.inf  # cells of one point each: no pairing noise
        ratios.append((float(snaps.t_values[a]), float(snaps.t_values[b]), ratio))
    return ratios, len(chosen)


def _motion_note(ratios: list[tuple[float, float, float]], looked_at: int) -> str | None:
    """A note naming the training intervals over which the cells moved hardly farther than two samples of one time
    differ by chance (:func:`_motion_ratios` under ``MOTION_NOISE``). OT plans between finite samples then pair cells
    mostly by chance, and the field there is not resolved by the data (benchmarks/chord_noise.py, on halves of 500
    cells: the analytic processes with the largest velocity errors are the ones at 1.2-1.8)."""
    slow = [f"t = {a:g} to {b:g}: {ratio:.2f}" for a, b, ratio in ratios if ratio < MOTION_NOISE]
    if not slow:
        return None
    shown = "; ".join(slow[:4]) + (f"; and {len(slow) - 4} more" if len(slow) > 4 else "")
    return (f"amcore train: note: over {len(slow)} of the {looked_at} training intervals looked at, the cells of the "
            f"two times differ hardly more than two random halves of one time do (the median squared distance OT pairs "
            f"cells over, against that of the halves: under {MOTION_NOISE:g}, on up to {MOTION_CELLS} cells a side; "
            f"{shown}): OT pairs their cells "
            "mostly by chance, and the velocities learned there are not resolved by these cells. More cells per "
            "time, fewer features (preprocess: n_features or pca) or times farther apart resolve them")  # fmt: skip


STRIDE_MIN_INTERVALS = 5  # stride auto takes chords over two intervals only on this many training intervals or more
STRIDE_NOISE = 4.0  # ... and where the median interval's motion ratio (:func:`_motion_ratios`) is under this


def _decided_stride(cfg: TrainConfig, snaps: Snapshots | None) -> TrainConfig:
    """``cfg`` with ``stride: auto`` decided on ``snaps``: ``train`` decides it first, and says so; a path or a
    :class:`Run` built alone decides it here, the same way."""
    if cfg.stride != "auto":
        return cfg
    return replace(cfg, stride=_auto_stride(cfg, _motion_ratios(snaps)[0] if snaps is not None else [])["stride"])


def _auto_stride(cfg: TrainConfig, ratios: list[tuple[float, float, float]]) -> dict | None:
    """``stride: auto``: 2 where the cells over the median training interval move less than ``STRIDE_NOISE`` times
    two random halves of one time differ (:func:`_motion_ratios`) and at least ``STRIDE_MIN_INTERVALS`` intervals
    were looked at, else 1; None where the setting is not ``auto``. There a chord over one interval is mostly the
    OT pairing's scatter, and a chord over two is as scattered for twice the motion (docs/training.md, "Intervals
    the cells do not resolve"); over few, widely spaced times it would cut across a large share of the course. Only
    AM and Flow Matching on straight coupled paths take a stride: 1 for the rest."""
    if cfg.stride != "auto":
        return None
    straight = cfg.interpolation == "linear" and cfg.path_coupling() in ("ot", "entropic")
    if not (cfg.objective in ("am", "fm") and cfg.implementation == "amcore" and straight):
        return {"stride": 1, "median_ratio": None, "looked_at": len(ratios)}
    median = float(np.median([ratio for _, _, ratio in ratios])) if len(ratios) >= STRIDE_MIN_INTERVALS else None
    stride = 2 if median is not None and median < STRIDE_NOISE else 1
    return {"stride": stride, "median_ratio": None if median is None else round(median, 4), "looked_at": len(ratios)}


def _sigma_spread(snaps: Snapshots, cfg: TrainConfig) -> str | None:
    """A note where eAM's noise alone would spread a cell over the training times by more than
    :data:`SIGMA_SPREAD` times the cells' own spread (audit 52: sigma 50 on a double well of spread 0.8, or a sigma
    for times in days left on times in hours, trained in silence; flagged only after the fact). A stationary
    Ornstein-Uhlenbeck process over ``theta T`` relaxation times reads ``sqrt(2 theta T)``: 5 is twelve of them."""
    times = snaps.t_values[snaps.training_snapshots()]
    noise = max(cfg.sigma, cfg.sigma_final or 0.0) * math.sqrt(float(times[-1] - times[0]))
    spread = float(np.sqrt(training_moments(snaps)[1].mean()))
    if spread == 0 or not noise > SIGMA_SPREAD * spread:  # no spread at all: refused by name once training starts
        return None
    return (f"amcore train: note: eAM's noise alone spreads a cell by sigma √(t_last - t_first) = {noise:.3g} over "
            f"the training times, {noise / spread:.3g} times the cells' spread ({spread:.3g}): the drift must pull "
            "every cell back against it. Is sigma in the data's units, per square root of its time unit? (A process "
            "that relaxes many times over the course does pull back: an OU process over theta T relaxation times "
            "reads sqrt(2 theta T) here; docs/training.md, eAM's noise)")  # fmt: skip


def _sigma_units(snaps: Snapshots) -> str:
    """What eAM's ``sigma`` is measured in. After standardisation it acts in rescaled coordinates: one number for
    every feature of the store, so a physical noise level ``sigma`` is ``sigma / std_j`` in feature ``j`` (audit 9:
    the drift's error went from 11 % to 55 % with the physical sigma on standardised cells); a projection on
    principal components alone is a rotation: isotropic noise stays isotropic, in the input's units. Either way it
    is per square root of the data's time unit (audit 42: a sigma for hours on times in days, 17.6 % drift error
    against 3.7 %, in silence)."""
    record = snaps.attrs.get("preprocess", {})
    config = record.get("config", {})
    steps = [name for name, on in (("standardised", config.get("standardize")), ("whitened", config.get("whiten")))
             if on]  # fmt: skip
    if not steps:
        times = snaps.t_values[snaps.training_snapshots()]
        return (f"amcore train: note: eAM's sigma is noise in the data's units per square root of its time unit (the "
                f"training times run from {times[0]:g} to {times[-1]:g}): a sigma for days is that for hours times "
                "√24 (docs/training.md, eAM's noise)")  # fmt: skip
    scale = np.asarray(record.get("scale") or [], dtype=np.float64)
    spreads = f" (the input's features were divided by {scale.min():.3g} to {scale.max():.3g})" if scale.size else ""
    return (
        f"amcore train: note: eAM's sigma is the noise of the store's coordinates, which preprocess "
        f"{' and '.join(steps)}{spreads}: isotropic there, not in the input's units, per square root of the data's "
        "time unit; to give a physical sigma, leave standardize and whiten off (docs/training.md, eAM's noise)"
    )


def _say_once(line: str) -> None:
    """To stderr once per job (from the first rank), not once per process."""
    if os.environ.get("RANK", "0") == "0":
        print(line, file=sys.stderr)


def _chosen_before(snaps: Snapshots | None, cfg: TrainConfig, partial: Path) -> dict | None:
    """The head an interrupted training of this configuration on this store chose (its resumable state keeps the
    choice), so that resuming it does not train the candidates again; None where there is none to trust."""
    store = store_identity(snaps.attrs) if snaps is not None else None
    if not partial.exists():
        return None
    saved = read_partial(partial)  # a damaged one stops here, not after training two candidates
    if store is None:
        return None
    chosen = saved.get("head_choice")
    if chosen is None or saved.get("store") != store:
        return None
    if not _same_run(saved["config"], replace(cfg, head=chosen["head"])):
        return None
    _say_once(f"amcore train: head auto: {chosen['head']}, as chosen before the interruption ({partial})")
    return chosen


HEAD_CANDIDATES = ("scalar", "inner")  # what head auto chooses between


def _candidate(checkpoint: Path, head: str) -> Path:
    """Where ``head: auto`` trains its candidate ``head`` (removed once trained)."""
    return checkpoint.with_name(f"{checkpoint.name}.head-{head}")


def _choose_head(snaps: Snapshots | None, cfg: TrainConfig, checkpoint: Path, path) -> dict:
    """``head: auto``: the scalar and the inner head trained on nine tenths of every training time's cells, and the
    one whose objective (AM's, eAM's or uAM's: each is half the squared distance to its path's field plus a constant
    of the path) is lower on the path through the tenth held apart (the scalar head unless the inner is clearly
    better: ``choice.choose``). The held-out times are dropped first: they never reach the choice."""
    if snaps is None or path is not None:
        raise InputError("head 'auto' holds training cells apart to choose the head: it needs snapshots, not a "
                         "given path")  # fmt: skip
    training = snaps.drop_times(snaps.attrs.get("holdout_times", []))
    try:
        fit, apart = training.split_cells(choice.APART, cfg.seed)
    except ValueError as err:
        raise InputError(f"head 'auto': {err}; set head scalar or inner") from err
    _say_once(f"amcore train: head auto: training the scalar and the inner head ({cfg.steps} steps each) on "
        f"{1 - choice.APART:.0%} of every training time's cells, to compare them on the rest")  # fmt: skip
    networks, tension, weight = {}, cfg.tension, cfg.velocity_weight
    for head in HEAD_CANDIDATES:
        candidate = _candidate(checkpoint, head)  # its .partial resumes after a kill
        _say_once(f"amcore train: head auto: candidate {head}")
        losses = candidate.with_name(f"{candidate.name}.csv")  # never the run's own loss CSV
        summary, payload = _fit(fit, replace(cfg, head=head), candidate, losses, None, None, None, last=False)
        networks[head] = build_network(payload["model_args"]).requires_grad_(False)
        networks[head].load_state_dict(payload["ema"])
        candidate.unlink(missing_ok=True)
        losses.unlink(missing_ok=True)
        tension = summary.get("spline_tension", tension)  # the shape the candidates trained on
        weight = summary.get("velocity_weight", weight)
    device = next(iter(payload["ema"].values())).device
    networks = {head: network.to(device) for head, network in networks.items()}
    # uAM's unbalanced coupling prices growth at the candidates' own length (review 81: it was left out); the pass
    # over the cells for their moments only where that length reads them
    unbalanced = cfg.path_coupling() == "unbalanced" and cfg.units == "standard"
    length = growth_length(cfg, training_moments(fit) if unbalanced else None)
    held = snapshot_path(apart.in_memory(), cfg, cfg.seed + VALIDATION_SEED, device, tension, weight, length)
    # The pathwise estimator where the path has velocities: the same objective, and a smaller error (eAM's has
    # none: its Laplacian term is read where the points are).
    pathwise = cfg.objective != "eam" and cfg.interpolation != "nearest" and cfg.time_weight == "none"
    share = 1.0 if pathwise else 0.0
    clock = payload["model_args"]  # both candidates' clock and units: the same cells, the same levels
    # uAM's growth as its training read it, per standard unit (``Run.growth_unit``; review 81: x_scale^2 off)
    spec = replace(cfg.spec(), pathwise=share, growth=cfg.growth / clock.get("x_scale", 1.0) ** 2)
    values = choice.held_apart_objectives(networks, held, spec, cfg.batch_size,
                                          choice.BATCHES, cfg.seed + VALIDATION_SEED, clock.get("time_knots"),
                                          clock.get("time_levels"))  # fmt: skip
    head, record = choice.choose(values, "scalar")
    if dist.is_initialized():  # one choice for every rank, the first's: a close call must not split the job
        shared = [head]
        dist.broadcast_object_list(shared, src=0)
        head = shared[0]
    diff = record["differences"]["inner"]
    _say_once(f"amcore train: head auto: {cfg.objective} objective on the held-apart cells "
        f"{record['objectives']['scalar']:.5g} "
        f"(scalar), {record['objectives']['inner']:.5g} (inner), difference {diff['difference']:+.4g} ± "
        f"{diff['se']:.2g}: head {head}")  # fmt: skip
    return {"head": head, "head_objective_scalar": record["objectives"]["scalar"],
            "head_objective_inner": record["objectives"]["inner"], "head_difference_se": diff["se"]}  # fmt: skip


def _choose_growth(snaps: Snapshots | None, cfg: TrainConfig, checkpoint: Path, loss_csv: Path, path) -> dict:
    """``growth: auto``: uAM trained at each of ``choice.GROWTHS`` on the training times, each pushed from the first
    training time through the others (``choice.growth_score``), and the best kept as the model (``choice.
    choose_growth``): three trainings. The held-out times are dropped first: they never reach the
    choice. A candidate's loss curve is in its loss CSV, not in ``on_metrics`` (three curves on one axis). A
    finished candidate that an interruption leaves is kept as resumable state at its last step, so a rerun resumes
    every candidate where it stood and trains none twice (``Run.resume`` checks the configuration and the data)."""
    from amcore.models.trained import load

    if snaps is None or path is not None:
        raise InputError("growth 'auto' pushes the training times' cells to choose the price of growth: it needs "
                         "snapshots, not a given path")  # fmt: skip
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError("growth 'auto' trains its candidates in one process: set a growth (or train them one by "
                         "one), or train on one process")  # fmt: skip
    training = snaps.drop_times(snaps.attrs.get("holdout_times", []))  # lazy stays lazy: a sample is read
    scores, trained = {}, {}
    _say_once(f"amcore train: growth auto: training uam at growth {', '.join(f'{g:g}' for g in choice.GROWTHS)} "
              f"({cfg.steps} steps each), each pushed from the first training time through the others")  # fmt: skip
    for growth in choice.GROWTHS:  # a kill -9 leaves finished candidates as checkpoints: resume them at their end
        _shelve_candidate(*_growth_candidate(checkpoint, growth))
    try:
        for growth in choice.GROWTHS:
            candidate, losses = _growth_candidate(checkpoint, growth)  # its .partial resumes after a kill
            _say_once(f"amcore train: growth auto: candidate growth {growth:g}")
            try:
                summary = _fit(snaps, replace(cfg, growth=growth), candidate, losses, None, None, None)[0]
            except TrainingDiverged as err:  # a price of growth that diverges is one to set aside, not the end
                _say_once(f"amcore train: growth auto: growth {growth:g} diverged ({err}): set aside")
                scores[growth] = {"w1": float("inf"), "mass_error": float("inf")}
                continue
            trained[growth] = (candidate, losses, summary)
            scores[growth] = choice.growth_score(load(candidate), training, cfg.seed)
        growth, record = choice.choose_growth(scores)
    except BaseException:  # no candidate is left to look like a model, each one's state stays to resume
        for other in choice.GROWTHS:  # (the next training of a fixed growth here removes them)
            _shelve_candidate(*_growth_candidate(checkpoint, other))
        raise
    shown = "; ".join(f"{g:g}: W1 {v['w1']:.4g}, mass off by up to {v['mass_error']:.1%}" for g, v in scores.items())
    _say_once(f"amcore train: growth auto: {shown}: growth {growth:g}" + ("" if record["gated"] else
              f" (every candidate missed a training mass by more than {choice.MASS_GATE:.0%})"))  # fmt: skip
    candidate, losses, summary = trained[growth]
    payload = torch.load(candidate, map_location="cpu", weights_only=False)
    payload["growth_choice"] = record
    save_checkpoint(checkpoint, payload)
    with replacing(loss_csv) as tmp:  # any folder, any file system
        shutil.copyfile(losses, tmp)
    for other in choice.GROWTHS:
        _remove_candidate(*_growth_candidate(checkpoint, other))
    flat = {f"growth_w1_{g:g}": v["w1"] for g, v in scores.items()}
    return summary | {"growth": growth} | flat


def _growth_candidate(checkpoint: Path, growth: float) -> tuple[Path, Path]:
    """Where ``growth: auto`` trains its candidate ``growth``, and its loss CSV."""
    candidate = checkpoint.with_name(f"{checkpoint.name}.growth-{growth:g}")
    return candidate, candidate.with_name(f"{candidate.name}.csv")


def _remove_candidate(candidate: Path, losses: Path) -> None:
    """A growth candidate's files and its resumable state."""
    for leftover in (candidate, losses, partial_path(candidate)):
        leftover.unlink(missing_ok=True)


def _shelve_candidate(candidate: Path, losses: Path) -> None:
    """A finished growth candidate turned back into resumable state at its last step (its loss history is in it),
    where an interrupted choice left it: resumed, it trains no step again, and nothing looks like a finished model.
    It replaces any state of the same training (a kill between the checkpoint and the state's removal leaves both)."""
    if candidate.exists():
        os.replace(candidate, partial_path(candidate))
    losses.unlink(missing_ok=True)


def _check_training_inputs(snaps: Snapshots | None, cfg: TrainConfig, checkpoint: Path, loss_csv: Path) -> None:
    """Before step 0: the outputs are two files that can be written, two training times at least (every time held
    out crashed in numpy, review), the training cells are numbers, and a path turned towards measured velocities has
    some (a subsample or refresh without any falls back to the spline)."""
    if checkpoint.resolve() == loss_csv.resolve():
        raise InputError(f"the checkpoint and the loss CSV are the same file {checkpoint}")
    for out in (checkpoint, loss_csv):
        if out.is_dir():
            raise InputError(f"{out} is a folder: a checkpoint and a loss CSV are files")
    if snaps is not None and len(kept := snaps.t_values[snaps.training_snapshots()]) < 2:
        raise InputError(f"need at least two training times to learn a flow, got {kept.tolist()} (times "
                         f"{snaps.t_values.tolist()}, held out {snaps.attrs.get('holdout_times', [])})")  # fmt: skip
    if snaps is not None and isinstance(snaps.x, np.ndarray):  # a store on disk was checked when prepared
        for k in snaps.training_snapshots():  # held-out cells never reach training
            rows = np.flatnonzero(~np.isfinite(snaps.snapshot(k)).all(axis=1))
            if len(rows):
                first = int(rows[0]) + int(snaps.offsets[k])
                given = "" if snaps.obs_index is None else f" (the first: row {int(snaps.obs_index[first])} of x)"
                raise InputError(f"{len(rows)} cells of time {snaps.t_values[k]:g} have a NaN or inf feature{given}; "
                                 "drop them: x[np.isfinite(x).all(axis=1)] and their times in a notebook, "
                                 "dataset.drop_nonfinite for a file")  # fmt: skip
    if snaps is not None and snaps.velocity is not None and cfg.velocity_weight != 0:
        kept = snaps.training_snapshots()
        times = (snaps.velocity[snaps.offsets[k] : snaps.offsets[k + 1]] for k in kept)  # read until one has some
        if not any(bool(dask.compute((v != 0).any())[0]) for v in times):
            raise InputError("velocity_weight: no training cell has a measured velocity (every one is 0): nothing "
                             "to turn the path with; set velocity_weight 0")  # fmt: skip


def _fit(snaps, cfg, checkpoint, loss_csv, on_metrics, path, head_choice, last=True,
         stride_choice=None) -> tuple[dict, dict]:  # fmt: skip
    """``train``'s loop and checkpoints (which keep ``head_choice`` and ``stride_choice``, how ``head`` and ``stride``
    ``auto`` chose); its summary and the
    checkpoint's payload (the network's arguments and EMA weights among it). A training that is not the job's
    ``last`` leaves the process group up for the next: torchrun's rendezvous is not meant to be joined again after
    it was torn down (the third join hung)."""
    torch.set_num_threads(cpu_threads(cfg.threads))
    keep_freed_memory()
    run = Run(snaps, cfg, path)
    run.head_choice, run.stride_choice = head_choice, stride_choice
    leader, partial = run.cluster.leader, partial_path(checkpoint)
    run.resume(partial)
    interactive = sys.stderr.isatty()
    bar = tqdm(
        total=cfg.steps, initial=run.first_step, desc=f"train {cfg.objective}", disable=not (interactive and leader)
    )
    start = time.perf_counter()
    for step in range(run.first_step, cfg.steps):
        run.step(step)
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            loss = run.log(step, on_metrics, partial)
            bar.set_postfix(loss=f"{loss:.4g}")
            if leader and not interactive:
                print(
                    f"step {step + 1}/{cfg.steps}  loss {loss:.5g}  {time.perf_counter() - start:.0f}s", file=sys.stderr
                )
        if run.validation_path is not None and ((step + 1) % cfg.validate_every == 0 or step + 1 == cfg.steps):
            run.validate(step + 1, on_metrics)
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            payload = run.state(step + 1)
            if leader:
                save_checkpoint(partial, payload)
        bar.update()
    bar.close()
    seconds = time.perf_counter() - start
    payload = run.state(cfg.steps)
    if run.best is not None:  # the weights of the step that did best on the validation cells
        payload["ema"] = run.best["ema"]
    if leader:
        if cfg.objective == "uam":
            payload["growth_range"], payload["growth_ranges"] = run.growth_range(payload["ema"])
        save_checkpoint(Path(checkpoint), payload)
        write_loss_csv(loss_csv, run.history)
        partial.unlink(missing_ok=True)
    if last:
        run.cluster.close()
    done = cfg.steps - run.first_step
    summary = {
        "train_seconds": seconds,
        "final_loss": run.history[-1][1],
        "steps_per_second": done / max(seconds, 1e-9),
    }
    if run.first_step:
        summary["resumed_from_step"] = run.first_step
    if run.best is not None:
        summary |= {"best_step": run.best["step"], "validation_loss": run.best["loss"]}
    if isinstance(run.path, (SnapshotPath, RefreshedPath)):
        summary["train_times"] = [round(float(t), 6) for t in run.path.t_values]
        if cfg.interpolation == "spline":
            summary["spline_tension"] = run.tension
            if "tension_by_interval" in (shape := run.interpolant()):  # where the bend limit lowered some
                summary["spline_tension_by_interval"] = shape["tension_by_interval"]
            summary["velocity_weight"] = run.velocity_weight
    return summary, payload


def spline_tensions(path) -> np.ndarray | None:
    """The spline path's tension on each interval (a streamed path's current one); None for other paths."""
    return getattr(getattr(path, "current", path), "tensions", None)


def divergence(history: list[tuple[int, float]], scale: float, factor: float) -> str | None:
    """Why the last logged loss cannot belong to a converging run, or None.

    Non-finite, or ``|loss| > factor * max(scale, |first logged loss|)`` with ``scale`` from ``kinetic_scale`` (the
    first logged loss only where it is itself within ``factor * scale``: a learning rate far too high explodes the
    loss from the first steps, 6.8e9 by step 50 at lr 1 against a scale of about 13, and would raise the bar): the
    population AM loss is bounded below by ``-scale`` (straight lines between independent pairs carry at least the
    action of any gradient flow through the path's marginals), so a loss many times beyond it is the objective
    exploited between or at finite samples (seen on 60-80-cell snapshots, scale 14.8: -843 by step 3800 with the
    quadratic head, -175 by step 2500 with the scalar one; -3.7e6 elsewhere). The default 10 leaves room for
    minibatch noise and spline paths that bend more than straight lines. ``factor`` 0 turns the check off
    (non-finite still stops).
    """
    loss = history[-1][1]
    if not math.isfinite(loss):
        return f"the loss is {loss} (NaN or inf): lower lr, or check the data's scale"
    first = abs(history[0][1])
    reference = max(scale, first) if factor == 0 or first <= factor * scale else scale
    if factor > 0 and abs(loss) > factor * reference:
        return (
            f"the loss {loss:.4g} is beyond {factor:g} x {reference:.3g}, the scale the data's kinetic action allows: "
            "the objective is being exploited between or at the sampled cells (too few cells per time, an unbounded "
            "head such as 'quadratic', or too high a learning rate); try a lower lr or fewer steps "
            "(divergence_factor sets the threshold)"
        )
    return None


def write_loss_csv(path: str | Path, history: list[tuple[int, float]]) -> None:
    with replacing(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "loss"])
        writer.writerows(history)
