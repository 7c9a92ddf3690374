"""A training's settings (``TrainConfig``): the config's ``models.<name>`` section, checked by name and range. Light
to import (no torch): the workflow checks every model's settings with it before any job."""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from amcore.choices import ACTIVATIONS, COUPLINGS, HEADS, IMPLEMENTATIONS, INTERPOLATIONS, OBJECTIVES, TIME_SAMPLINGS
from amcore.errors import InputError

if TYPE_CHECKING:
    from amcore.models.objective import ObjectiveSpec


def _integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _plain(value):
    """numpy's scalars (``np.sqrt(2 * D)``, ``np.int64``, ``np.str_``) as Python's own, in lists too: a checkpoint
    keeps its config and is read back with ``weights_only``, which refuses numpy's types (audit 92: a finished
    training whose sigma was a ``np.float64`` could not be loaded)."""
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    return str(value) if isinstance(value, str) else value


def _in(lo: float, hi: float = math.inf, *, low_open: bool = False, high_open: bool = False) -> Callable:
    """A range test that refuses NaN (every comparison with it is false) and infinities."""
    return lambda v: math.isfinite(v) and (v > lo if low_open else v >= lo) and (v < hi if high_open else v <= hi)


# Each numeric setting: its type ("int", "number", "number|null"), what the error says it must be, and the test of
# its value (None: its range is checked, with its own message, in ``TrainConfig.__post_init__``); the domains are
# the schema's (workflow/schemas/config.schema.yaml, models.<name>). ``stride`` has its own check.
_DOMAINS: dict[str, tuple[str, str, Callable | None]] = {
    "steps": ("int", "an integer >= 1", _in(1)),
    "batch_size": ("int", "an integer >= 2", _in(2)),
    "lr": ("number", "a number > 0", _in(0, low_open=True)),
    "lr_final": ("number", "a number >= 0", _in(0)),
    "warmup_steps": ("int", "an integer >= 0", _in(0)),
    "grad_clip": ("number|null", "a number > 0 or null", _in(0, low_open=True)),
    "ema_decay": ("number", "a number in [0, 1]", _in(0, 1)),
    "width": ("int", "an integer >= 1", _in(1)),
    "depth": ("int", "an integer >= 1", _in(1)),
    "time_frequencies": ("int", "an integer >= 0", _in(0)),
    "pathwise": ("number", "a number in [0, 1]", None),
    "sigma": ("number", "a number >= 0", None),
    "sigma_final": ("number|null", "a number >= 0 or null", None),
    "exact_trace_max_dim": ("int", "an integer >= 1", _in(1)),
    "probes": ("int", "an integer >= 1", _in(1)),
    "ot_max_size": ("int", "an integer >= 2", _in(2)),
    "ot_refresh_every": ("int", "an integer >= 1", _in(1)),
    "entropic_reg": ("number|null", "a number > 0 or null", _in(0, low_open=True)),
    "entropic_draws": ("int", "an integer >= 1", _in(1)),
    "seed": ("int", "an integer", _in(-math.inf)),
    "threads": ("int", "an integer >= 0 (0: the cores this process may use)", _in(0)),
    "streams": ("int", "an integer >= 0 (0: one per process)", _in(0)),
    "log_every": ("int", "an integer >= 1", _in(1)),
    "checkpoint_every": ("int", "an integer >= 1", _in(1)),
    "in_memory_max_mb": ("number", "a number > 0", _in(0, low_open=True)),
    "stream_refresh_every": ("int", "an integer >= 1", _in(1)),
    "divergence_factor": ("number", "a number >= 0 (0: only the non-finite check)", _in(0)),
    "validation": ("number", "a number in [0, 0.5)", None),
    "validate_every": ("int", "an integer >= 1", _in(1)),
    "torchcfm_sigma": ("number", "a number >= 0", _in(0)),
}
_FLAGS = ("fused", "compile", "tf32", "bf16")
# Each text setting and its choices (a typo, or another case, would otherwise silently mean the default).
_CHOICES = {
    "coupling": COUPLINGS, "interpolation": INTERPOLATIONS, "head": ("auto", *HEADS), "activation": tuple(ACTIVATIONS),
    "time_sampling": TIME_SAMPLINGS, "time_clock": ("motion", "linear"), "time_weight": ("none", "linear"),
    "laplacian": ("auto", "exact", "hutchinson"),
}  # fmt: skip


def _check_domains(cfg: TrainConfig) -> None:
    """Types and ranges first: a string, a bool or a float where an integer belongs would otherwise get past the
    config and fail deep in the training loop (or, as width 0, train a degenerate network without a word)."""
    for field in fields(cfg):
        setattr(cfg, field.name, _plain(getattr(cfg, field.name)))
    for name, (kind, what, test) in _DOMAINS.items():
        value = getattr(cfg, name)
        if value is None and kind == "number|null":
            continue
        typed = _integer(value) if kind == "int" else _number(value)
        if not typed or (test is not None and not test(value)):
            kind_of = "" if typed else f" (a {type(value).__name__})"
            raise InputError(f"{name} must be {what}, got {value!r}{kind_of}")
    if cfg.growth != "auto" and not _number(cfg.growth):  # > 0 in __post_init__, with why
        raise InputError(f"growth must be 'auto' or a number > 0, got {cfg.growth!r} (a {type(cfg.growth).__name__})")
    tension = cfg.tension
    if tension != "auto" and not (_number(tension) and 0 <= tension <= 1):
        raise InputError(f"tension must be 'auto' or a number in [0, 1], got {tension!r}")
    weight = cfg.velocity_weight
    if weight != "auto" and not (_number(weight) and 0 <= weight <= 1):
        raise InputError(f"velocity_weight must be 'auto' or a number in [0, 1] (1 turns each chain all the way to "
                         f"its cells' velocities), got {weight!r}")  # fmt: skip
    periods = cfg.time_periods
    if not isinstance(periods, (list, tuple)) or not all(_number(p) and p > 0 for p in periods):
        raise InputError(f"time_periods must be a list of numbers > 0, got {periods!r}")
    for name in _FLAGS:
        if not isinstance(getattr(cfg, name), bool):
            raise InputError(f"{name} must be true or false, got {getattr(cfg, name)!r}")
    for name, allowed in _CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise InputError(f"{name} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")
    for name in ("sigma", "sigma_final", "pathwise", "validation"):  # ranges checked in __post_init__
        value = getattr(cfg, name)
        if value is not None and not math.isfinite(value):
            raise InputError(f"{name} must be a finite number, got {value!r}")
    cfg.seed = int(cfg.seed)  # numpy's integers pass as integers but not as torch's seeds


@dataclass
class TrainConfig:
    """Everything a training run depends on; the config's ``models.<name>`` section, flat."""

    objective: str = "am"
    implementation: str = "amcore"
    coupling: str = "ot"
    interpolation: str = "linear"
    tension: float | str = "auto"
    velocity_weight: float | str = 0.0
    stride: int | str = "auto"
    steps: int = 4000
    batch_size: int = 512
    lr: float = 1e-3
    lr_final: float = 1e-5
    warmup_steps: int = 0
    grad_clip: float | None = None
    ema_decay: float = 0.999
    head: str = "scalar"
    units: str = "standard"  # the network's: standardised cells per observation gap, or the data's own
    width: int = 128
    depth: int = 3
    activation: str = "silu"
    time_frequencies: int = 1
    time_periods: tuple[float, ...] = ()
    time_sampling: str = "stratified"
    time_clock: str = "motion"
    time_weight: str = "none"
    pathwise: float = 0.0
    sigma: float = 0.0
    sigma_final: float | None = None
    growth: float | str = 1.0
    laplacian: str = "auto"
    exact_trace_max_dim: int = 1
    probes: int = 1
    ot_max_size: int = 5000
    ot_refresh_every: int = 1000
    entropic_reg: float | None = None
    entropic_draws: int = 16
    seed: int = 0
    threads: int = 0
    fused: bool = True
    compile: bool = False
    tf32: bool = False
    bf16: bool = False
    streams: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    in_memory_max_mb: float = 2048
    stream_refresh_every: int = 1000
    divergence_factor: float = 10.0
    validation: float = 0.0
    validate_every: int = 250
    torchcfm_sigma: float = 0.1

    @classmethod
    def from_params(cls, params: dict) -> TrainConfig:
        """The config of a ``models.<name>`` section (``amcore train --params``): a key that is no setting is an
        ``InputError`` naming it and, where one is close, the setting meant."""
        known = [f.name for f in fields(cls)]
        unknown = [key for key in params if key not in known]
        if unknown:
            named = []
            for key in unknown:
                close = difflib.get_close_matches(str(key), known, n=1)
                named.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            plural = "s" if len(unknown) > 1 else ""
            raise InputError(f"unknown training setting{plural} {', '.join(named)}")
        return cls(**params)

    def __post_init__(self) -> None:
        _check_domains(self)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; expected one of {OBJECTIVES}")
        if self.objective == "eam" and self.sigma <= 0:
            raise ValueError("objective 'eam' needs sigma > 0 (the diffusion of dX = grad s dt + sigma dW)")
        if self.objective == "eam" and self.sigma_final is not None and self.sigma_final < 0:
            raise ValueError(f"sigma_final must be >= 0 (sigma_t runs linearly to it), got {self.sigma_final}")
        if self.objective != "eam" and (self.sigma != 0 or self.sigma_final is not None):
            raise ValueError(
                f"sigma / sigma_final (got {self.sigma} / {self.sigma_final}) set the diffusion of objective 'eam'; "
                f"objective {self.objective!r} has none and would silently ignore them: remove them, or use "
                "objective 'eam'"
            )
        # Settings that the chosen objective, path or implementation never reads: refused like sigma above, so a
        # growth meant for uam never trains balanced AM in silence.
        unused = [
            ("growth", self.growth != 1.0 and self.objective != "uam", "objective 'uam'"),
            ("tension", self.tension != "auto" and self.interpolation != "spline", "interpolation 'spline'"),
            ("velocity_weight", self.velocity_weight != 0 and self.interpolation != "spline", "interpolation 'spline'"),
            ("torchcfm_sigma", self.torchcfm_sigma != 0.1 and self.implementation != "torchcfm",
             "implementation 'torchcfm'"),
            ("head", self.head not in ("scalar", "auto") and self.objective == "fm",
             "objective 'am', 'eam' or 'uam' (a potential)"),
            ("laplacian", self.laplacian != "auto" and self.objective != "eam", "objective 'eam'"),
            ("probes", self.probes != 1 and self.objective != "eam", "objective 'eam'"),
            ("exact_trace_max_dim", self.exact_trace_max_dim != 1 and self.objective != "eam", "objective 'eam'"),
            ("probes", self.probes != 1 and self.laplacian == "exact", "laplacian 'auto' or 'hutchinson'"),
            ("exact_trace_max_dim", self.exact_trace_max_dim != 1 and self.laplacian != "auto", "laplacian 'auto'"),
            ("coupling", self.coupling != "ot" and self.interpolation == "nearest",
             "interpolation 'linear' (nearest frames pair nothing)"),
            ("entropic_reg", self.entropic_reg is not None and self.path_coupling() != "entropic",
             "coupling 'entropic'"),
            ("entropic_draws", self.entropic_draws != 16 and self.path_coupling() != "entropic", "coupling 'entropic'"),
            ("time_weight", self.time_weight != "none" and self.objective == "fm", "objective 'am', 'eam' or 'uam'"),
            ("fused", not self.fused and self.objective == "fm", "objective 'am', 'eam' or 'uam'"),
            ("compile", self.compile and self.objective == "fm", "objective 'am', 'eam' or 'uam'"),
            ("validate_every", self.validate_every != 250 and self.validation == 0, "validation > 0"),
            ("time_sampling", self.time_sampling != "stratified" and self.implementation == "torchcfm",
             "implementation 'amcore' (TorchCFM's matcher draws its own times)"),
        ]  # fmt: skip
        for name, ignored, needs in unused:
            if ignored:
                raise InputError(f"{name} (got {getattr(self, name)!r}) is read only with {needs}: remove it, or set "
                                 f"{needs.split()[0]} as meant")  # fmt: skip
        if self.compile and not self.fused:
            raise InputError("compile (got True) compiles the fused loss: it needs fused true")
        if self.interpolation == "spline" and self.coupling != "ot":
            raise InputError(f"interpolation 'spline' chains exact OT plans: it needs coupling 'ot', not "
                             f"{self.coupling!r}")  # fmt: skip
        if self.coupling == "unbalanced" and (self.objective != "uam" or self.interpolation != "linear"
                                              or self.stride not in (1, "auto")):  # fmt: skip
            raise InputError(f"coupling 'unbalanced' lets mass grow and die along uAM's path: it needs objective "
                             f"'uam', interpolation 'linear' and stride 1 (got {self.objective!r}, "
                             f"{self.interpolation!r}, {self.stride!r})")  # fmt: skip
        if self.path_coupling() == "entropic" and self.entropic_reg is None and self.objective != "eam":
            raise InputError(f"coupling 'entropic' needs entropic_reg (objective {self.objective!r} has no sigma to "
                             "take the Schrödinger bridge's 2 int sigma_t^2 dt from, as eam does)")  # fmt: skip
        if self.units not in ("standard", "data"):
            raise ValueError(f"units must be 'standard' or 'data', got {self.units!r}")
        if self.warmup_steps < 0 or (self.grad_clip is not None and not self.grad_clip > 0):
            raise ValueError(f"warmup_steps must be >= 0 and grad_clip > 0 (or null), got {self.warmup_steps}, "
                             f"{self.grad_clip}")  # fmt: skip
        if not 0 <= self.validation < 0.5 or self.validate_every < 1:
            raise ValueError(f"validation must be in [0, 0.5) (a fraction of each time's cells) and validate_every "
                             f">= 1, got {self.validation} and {self.validate_every}")  # fmt: skip
        whole = isinstance(self.stride, int) and not isinstance(self.stride, bool) and self.stride >= 1
        if self.stride != "auto" and not whole or self.stride not in (1, "auto") and (
            self.interpolation != "linear" or self.path_coupling() == "independent"
        ):  # fmt: skip
            raise ValueError(
                f"stride (got {self.stride!r}) mixes that many interleaved straight OT paths: 'auto' or an integer "
                f">= 1, above 1 with interpolation 'linear' and coupling 'ot' or 'entropic' (got "
                f"{self.interpolation!r} and {self.coupling!r}"
                f"{', implementation torchcfm' if self.implementation == 'torchcfm' else ''})"
            )
        if self.pathwise != 0 and (
            not 0 <= self.pathwise <= 1 or self.objective not in ("am", "uam") or self.interpolation == "nearest"
            or self.time_weight != "none"
        ):  # fmt: skip
            raise ValueError(
                f"pathwise (got {self.pathwise!r}) is the weight in [0, 1] of AM's pathwise estimator, which needs "
                f"objective 'am' or 'uam', the velocities of an interpolation 'linear' or 'spline' and time_weight "
                f"'none' (got {self.objective!r}, {self.interpolation!r} and {self.time_weight!r})"
            )
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(f"unknown implementation {self.implementation!r}; expected one of {IMPLEMENTATIONS}")
        if self.implementation == "torchcfm" and (
            self.objective != "fm" or self.interpolation != "linear" or self.coupling not in ("ot", "independent")
        ):
            raise ValueError(
                "implementation 'torchcfm' is TorchCFM's own OT-CFM (coupling ot) or I-CFM (coupling independent): it "
                f"needs objective 'fm' and interpolation 'linear', got {self.objective!r}, {self.interpolation!r} "
                f"and coupling {self.coupling!r}"
            )
        if self.objective == "fm" and self.interpolation == "nearest":
            raise ValueError(
                "interpolation 'nearest' draws frames, not pairs: Flow Matching regresses on a pair's velocity and "
                "needs interpolation 'linear' or 'spline'"
            )
        if self.head == "auto" and self.objective == "fm":
            raise InputError("head 'auto' chooses the potential's head by the objective on held-apart training "
                             "cells: it needs objective 'am', 'eam' or 'uam', got 'fm' (a vector field, no "
                             "potential)")  # fmt: skip
        if self.growth == "auto" and self.head == "auto":
            raise InputError("growth 'auto' and head 'auto' each train candidates: choose one of them at a time "
                             "(head auto first, then set the head it chose)")  # fmt: skip
        if self.growth != "auto" and not self.growth > 0:  # also refuses NaN
            raise ValueError(
                f"growth must be > 0, got {self.growth}: uAM's growth rate is growth * s and its loss has "
                "+ 1/2 growth s^2, which for growth <= 0 is unbounded below (or, at 0, linear in a constant shift of "
                "s); a population that shrinks is described by s < 0, not by a negative growth"
            )

    def streams_of(self, world: int) -> int:
        """The seeded sub-batches of each step in a training of ``world`` processes (``streams``, else one a
        process), refused where they do not share out: checked by the workflow before any job, as by train."""
        streams = self.streams or world
        if streams % world or self.batch_size % streams:  # name the half that fails (audit 65)
            what = f"streams ({streams}{', one per process' if not self.streams else ''})"
            if streams % world:
                what += f" is not a multiple of the {world} training processes"
            if self.batch_size % streams:
                what += f"{' and' if streams % world else ''} does not divide batch_size ({self.batch_size})"
            raise InputError(f"{what}: set batch_size or streams to fit (train_processes and gpus set the processes)")
        if self.compile and world > 1:
            raise InputError(
                f"compile compiles the fused loss of one process, not {world} (train_processes, gpus): "
                "leave compile out"
            )
        return streams

    def path_coupling(self) -> str:
        """The coupling the training path solves: none for nearest frames (they pair nothing) and for TorchCFM,
        whose matcher pairs each minibatch itself."""
        return "independent" if self.interpolation == "nearest" or self.implementation == "torchcfm" else self.coupling

    def spec(self) -> ObjectiveSpec:
        """The loss's settings, taken by name from this flat config (``kind`` is ``objective``)."""
        from amcore.models.objective import ObjectiveSpec  # torch: imported when a training needs it

        names = [f.name for f in fields(ObjectiveSpec) if f.name != "kind"]
        return ObjectiveSpec(kind=self.objective, **{name: getattr(self, name) for name in names})
