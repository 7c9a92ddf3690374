"""A trained model as an MLflow model (issue 14): a pyfunc whose input is the features and the time.

The MLflow model ships the training's checkpoint (``artifacts/model.pt``, tensors and plain values that load with
``weights_only=True``) and no pickle: it is a "model from code" whose code (``CODE``, four lines) takes the stateless
``AmcorePyfunc`` from the installed amcore, and ``load_context`` reads the checkpoint through ``amcore.load``.
``predict`` takes a DataFrame with one column per feature and the time (``t``), and answers the flow each cell
follows there, one column per feature: the velocity (AM, uAM, FM) or eAM's drift.

``log_model`` creates it, with explicit client calls (no active run, no global tracking URI), as the logged model
``model`` of a run: ``runs:/<run_id>/model`` and ``models:/<model_id>`` name it. ``amcore.load`` reads those URIs,
registry URIs (``models:/<name>/<version>``) and local MLflow model directories back into a ``TrainedModel``;
that reads the ``MLmodel`` file and the checkpoint only, and runs none of the model's code.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import tempfile
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, Schema

from amcore.errors import InputError
from amcore.models.trained import TrainedModel, load

CHECKPOINT = "checkpoint"  # the name of the checkpoint among the MLflow model's artifacts
URI_SCHEMES = ("runs:/", "models:/")
# What the pyfunc imports: amcore (which brings the rest of its own dependencies) and the versions in use now.
# Given explicitly, MLflow records them as they are instead of inferring them by loading the model (slow).
REQUIREMENTS = ("amcore", "torch", "numpy", "pandas", "mlflow")
# "Models from code": the MLflow model holds this file, not a pickle; loading it runs these lines, which take the
# pyfunc from the installed amcore, and ``load_context`` then reads the checkpoint (``weights_only``).
CODE_FILE = "amcore_pyfunc.py"
CODE = """\
from mlflow.models import set_model

from amcore.models.mlflow_model import AmcorePyfunc

set_model(AmcorePyfunc())
"""


def time_column(feature_names: list[str]) -> str:
    """The name of the time column: ``t``, unless a feature already has that name."""
    return next(name for name in ("t", "time", "_t", "_time") if name not in feature_names)


def output_name(objective: str) -> str:
    """What ``predict`` answers: eAM's drift, the velocity of the others."""
    return "drift" if objective == "eam" else "velocity"


def signature(model: TrainedModel) -> ModelSignature:
    """Input: the features and the time (any float, cast to the network's float32); output: the field, float32.

    Inputs are declared double so that a float64 DataFrame (pandas' default) is taken as it is; the network
    computes in float32 either way, exactly as ``TrainedModel.velocity`` does.
    """
    names = [*model.feature_names, time_column(model.feature_names)]
    return ModelSignature(
        inputs=Schema([ColSpec("double", name) for name in names]),
        outputs=Schema([ColSpec("float", name) for name in model.feature_names]),
    )


class AmcorePyfunc(mlflow.pyfunc.PythonModel):
    """The pyfunc of a trained amcore model; stateless until ``load_context`` reads the checkpoint."""

    def load_context(self, context) -> None:
        self.model = load(context.artifacts[CHECKPOINT])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        model = self.model
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        missing = [c for c in [*model.feature_names, time_column(model.feature_names)] if c not in frame.columns]
        if missing:
            raise ValueError(f"the input lacks the column(s) {missing}")
        x = frame[model.feature_names].to_numpy(dtype=np.float32)
        t = frame[time_column(model.feature_names)].to_numpy(dtype=np.float32)
        field = model.drift if model.objective == "eam" else model.velocity
        return pd.DataFrame(field(x, t), columns=model.feature_names, index=frame.index)


def input_example(model: TrainedModel) -> pd.DataFrame:
    """Two cells at the origin, at the start and the end of the training's time range."""
    columns = {name: [0.0, 0.0] for name in model.feature_names}
    return pd.DataFrame({**columns, time_column(model.feature_names): list(model.t_range)})


def requirements() -> list[str]:
    """The pinned pip requirements of the pyfunc (local version labels such as ``+cpu`` dropped)."""
    return [f"{name}=={importlib.metadata.version(name).split('+')[0]}" for name in REQUIREMENTS]


def save_model(checkpoint: str | Path, path: str | Path, mlflow_model: Model | None = None) -> TrainedModel:
    """Write the MLflow model of the checkpoint to the new directory ``path``; returns the loaded model. An MLflow
    model given as the checkpoint is refused: it was copied in whole, and ``amcore.load`` could not read the result
    (audit 16)."""
    if str(checkpoint).startswith(URI_SCHEMES) or Path(checkpoint).is_dir():
        inside = Path(checkpoint) / "MLmodel"
        hint = f" (this one holds {_checkpoint_in(Path(checkpoint))})" if inside.is_file() else ""
        raise InputError(f"{checkpoint}: save_model takes a checkpoint file, amcore train's model.pt, not an MLflow "
                         f"model or a folder{hint}")  # fmt: skip
    model = load(checkpoint)
    with tempfile.TemporaryDirectory(prefix="amcore-mlflow-") as tmp:
        code = Path(tmp) / CODE_FILE
        code.write_text(CODE)
        mlflow.pyfunc.save_model(
            path=str(path),
            python_model=str(code),
            artifacts={CHECKPOINT: str(Path(checkpoint).resolve())},
            signature=signature(model),
            input_example=input_example(model),
            pip_requirements=requirements(),
            mlflow_model=mlflow_model,
            metadata={
                "amcore.objective": model.objective,
                "amcore.output": output_name(model.objective),
                "amcore.time_column": time_column(model.feature_names),
                "amcore.t_range": list(model.t_range),
                "amcore.step": int(model.info["step"]),
                "amcore.coordinates": model.coordinates,  # not the input's units where preprocessing changed them
            },
        )
    return model


def log_model(client, run_id: str, checkpoint: str | Path, name: str = "model") -> str:
    """Log the checkpoint as the MLflow model ``name`` of the run (``runs:/<run_id>/<name>``); returns its model id.

    ``client`` is an ``MlflowClient``. A model whose upload fails is deleted, so that ``runs:/`` never finds it.
    """
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus

    run = client.get_run(run_id)
    logged = client.create_logged_model(run.info.experiment_id, name=name, source_run_id=run_id)
    try:
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        with tempfile.TemporaryDirectory(prefix="amcore-mlflow-") as tmp:
            local = Path(tmp) / name
            description = Model(
                artifact_path=logged.artifact_location,
                model_uuid=logged.model_id,
                run_id=run_id,
                model_id=logged.model_id,
            )
            model = save_model(checkpoint, local, description)
            client.log_model_artifacts(logged.model_id, str(local))
        client.set_logged_model_tags(logged.model_id, {"amcore.objective": model.objective})
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    except Exception:
        with contextlib.suppress(Exception):  # the upload's error is the one to report
            client.delete_logged_model(logged.model_id)
        raise
    return logged.model_id


def _checkpoint_in(model_dir: Path) -> Path:
    flavor = Model.load(str(model_dir / "MLmodel")).flavors.get("python_function", {})
    try:
        return model_dir / flavor["artifacts"][CHECKPOINT]["path"]
    except KeyError:
        raise ValueError(f"{model_dir} is an MLflow model without an amcore checkpoint") from None


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite URI; None for other backends and in-memory databases."""
    if not uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    return Path(database) if database and database != ":memory:" else None


def _reachable_tracker(text: str) -> str:
    """The tracking URI a ``runs:/`` or ``models:/`` URI resolves against, refused at once where it cannot answer
    (audit 85: a stopped server was retried for 4 minutes; with none set, MLflow created ./mlflow.db and said only
    that the run was not found)."""
    import socket
    from urllib.parse import urlparse

    uri = mlflow.get_tracking_uri()
    scheme, database = urlparse(uri).scheme, sqlite_path(uri)
    if database is not None and not database.is_file():
        raise InputError(
            f"{text}: MLflow looks for it in {uri}, which does not exist: set MLFLOW_TRACKING_URI to "
            "the tracker that logged the run (the pipeline's: sqlite:///<results_dir>/mlflow.db)"
        )
    if scheme in ("http", "https"):
        address = urlparse(uri)
        try:
            socket.create_connection((address.hostname, address.port or (443 if scheme == "https" else 80)), 10).close()
        except OSError as err:
            raise InputError(
                f"{text}: the tracking server {uri} does not answer ({err.strerror or err}): start it, "
                "or set MLFLOW_TRACKING_URI to the tracker that logged the run"
            ) from None
    return uri


def load_trained(uri: str | Path) -> TrainedModel:
    """The ``TrainedModel`` of an MLflow model: a ``runs:/`` or ``models:/`` URI, or a local model directory.

    URIs resolve against MLflow's tracking URI (``MLFLOW_TRACKING_URI``, ``mlflow.set_tracking_uri``): MLflow 3.17
    resolves ``models:/`` (also behind a ``runs:/`` URI) with it whatever tracking URI a download is given.
    """
    text = str(uri)
    if not text.startswith(URI_SCHEMES):
        model = TrainedModel.from_checkpoint(_checkpoint_in(Path(text)))
        model.info["mlflow_model"] = text
        return model
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    tracker = _reachable_tracker(text)
    with tempfile.TemporaryDirectory(prefix="amcore-mlflow-") as tmp:
        try:
            local = Path(download_artifacts(artifact_uri=text, dst_path=tmp))
        except MlflowException as err:  # "Run with id=... not found" said nothing of where it was looked for
            raise InputError(f"{text}: {err.message} (in the tracker {tracker}: MLFLOW_TRACKING_URI or "
                             "mlflow.set_tracking_uri names it)") from err  # fmt: skip
        model = TrainedModel.from_checkpoint(_checkpoint_in(local))  # read into memory: the files can go
    model.info["path"] = model.info["mlflow_model"] = text
    return model
