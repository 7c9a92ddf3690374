"""The names a config chooses from, in a module that imports nothing heavy: the workflow checks every model's
settings before any job (``training.config.TrainConfig``, :func:`integrator`) without loading torch, which cost
each ``snakemake`` call, a dry run included, about 4 s of its start."""

from __future__ import annotations

OBJECTIVES = ("am", "eam", "uam", "fm")
IMPLEMENTATIONS = ("amcore", "torchcfm")  # amcore's own losses, or TorchCFM's matchers (Flow Matching only)
COUPLINGS = ("independent", "ot", "entropic", "unbalanced")
INTERPOLATIONS = ("linear", "spline", "nearest")
HEADS = ("scalar", "quadratic", "inner")
ACTIVATIONS = {"silu": "SiLU", "tanh": "Tanh", "gelu": "GELU", "softplus": "Softplus"}  # name: its torch.nn class
TIME_SAMPLINGS = ("uniform", "stratified", "importance")
METHODS = ("auto", "rk4", "dopri5", "sde", "weighted", "euler")  # integration
BASELINES = ("copy_prev", "ot_displacement", "ot_push", "spline_path", "velocity_path")  # held-out predictions
DISTANCE_OPTIONS = ("max_exact_size", "kernel_max_size", "projections", "seed")  # the evaluate keys a score reads


def integrator(objective: str, method: str = "auto") -> str:
    """The integration method ``method`` stands for on a model of ``objective``: ``auto`` is Euler-Maruyama
    (``sde``) for eAM, weighted particles for uAM and RK4 otherwise; a method that drops eAM's noise or uAM's
    weights, or needs what the model has not, is refused (the pipeline asks before any job)."""
    if method not in METHODS:
        raise ValueError(f"unknown integration method {method!r}; expected one of {METHODS}")
    needs = {"weighted": ("uam", "growth to weight particles by"),
             "sde": ("eam", "noise for the SDE to draw (rk4, dopri5 or euler push it)")}.get(method)  # fmt: skip
    if needs and objective != needs[0]:
        article = "a" if objective == "uam" else "an"  # an AM, an EAM, an FM; a UAM
        raise ValueError(f"{article} {objective.upper()} model has no {needs[1]} (only {needs[0]} models)")
    own = {"eam": "sde", "uam": "weighted"}.get(objective)
    if own and method not in ("auto", own):
        lost = "noise (its marginals collapse)" if own == "sde" else "growth (its particles lose their weights)"
        raise ValueError(f"method {method!r} would push this {objective} model without its {lost}: use {own!r} or "
                         "'auto' (in a pipeline, integrate.models gives one model a method of its own, and auto gives "
                         "each kind its own)")  # fmt: skip
    return (own or "rk4") if method == "auto" else method
