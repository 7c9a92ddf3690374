"""MLflow tracking: one parent run per pipeline invocation, one child run per stage (DESIGN §5).

The parent run is created once, before any job starts (Snakemake's ``onstart``), and its coordinates
are exported as environment variables that every job inherits, locally or through a cluster executor.
Tracking is best effort: when the backend fails, the stage carries on, keeps its metrics, retries at the
end and says so. Metrics also always land in the stage's own output files.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ENV_URI = "AMCORE_MLFLOW_URI"
ENV_EXPERIMENT = "AMCORE_MLFLOW_EXPERIMENT_ID"
ENV_PARENT = "AMCORE_MLFLOW_PARENT_RUN_ID"


def resolve_uri(config_uri: str | None, results_dir: str | Path) -> str:
    """``MLFLOW_TRACKING_URI`` wins, then the config, then a sqlite file under the results directory."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if config_uri:
        return config_uri
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def start_parent(uri: str, experiment: str, results_dir: str | Path, tags: dict[str, str]) -> None:
    """Create (once) the backend and the experiment, open the parent run and export its coordinates.

    An unreachable backend is reported and leaves the pipeline untracked rather than stopped.
    """
    for key in (ENV_URI, ENV_EXPERIMENT, ENV_PARENT):
        os.environ.pop(key, None)
    try:
        client = _client(uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            location = None
            if uri.startswith("sqlite:"):
                location = (Path(results_dir) / "mlartifacts").resolve().as_uri()
            experiment_id = client.create_experiment(experiment, artifact_location=location)
        else:
            experiment_id = found.experiment_id
        run = client.create_run(experiment_id, run_name="pipeline", tags={"amcore.kind": "pipeline", **tags})
    except Exception as err:  # noqa: BLE001 - an unreachable tracker must not stop the pipeline
        print(f"amcore: MLflow at {uri} unavailable ({err}); this invocation is not tracked", file=sys.stderr)
        return
    os.environ.update({ENV_URI: uri, ENV_EXPERIMENT: experiment_id, ENV_PARENT: run.info.run_id})
    print(f"amcore: MLflow parent run {run.info.run_id} at {uri}", file=sys.stderr)


def end_parent(status: str) -> None:
    state = _read_state()
    if state:
        try:
            _client(state["uri"]).set_terminated(state["parent_run_id"], status=status)
        except Exception as err:  # noqa: BLE001 - tracking must never fail the pipeline
            print(f"amcore: could not close the MLflow parent run ({err})", file=sys.stderr)


def log_to_parent(paths: list[str]) -> None:
    """Attach files that summarise the whole invocation to the parent run (best effort)."""
    state = _read_state()
    if not state:
        return
    try:
        client = _client(state["uri"])
        for path in paths:
            client.log_artifact(state["parent_run_id"], path)
    except Exception as err:  # noqa: BLE001 - tracking must never fail the pipeline
        print(f"amcore: could not attach {paths} to the MLflow parent run ({err})", file=sys.stderr)


def _read_state() -> dict | None:
    if not os.environ.get(ENV_PARENT):
        return None
    return {
        "uri": os.environ[ENV_URI],
        "experiment_id": os.environ[ENV_EXPERIMENT],
        "parent_run_id": os.environ[ENV_PARENT],
    }


class StageRun:
    """A child run for one stage; every call is best effort and buffered until the backend answers."""

    def __init__(self, stage: str, tags: dict[str, str], params: dict) -> None:
        self.state = _read_state()
        self.stage = stage
        self.tags = {"amcore.kind": "stage", "amcore.stage": stage, **tags}
        self.params = _flatten(params)
        self.run_id: str | None = None
        self.pending: list = []
        self.artifacts: list[tuple[str, str | None]] = []
        self.failed = False
        if self.state is None:
            print(f"amcore: no MLflow parent run ({ENV_PARENT} unset); stage {stage} is not tracked", file=sys.stderr)

    def __enter__(self) -> StageRun:
        self._try(self._open)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.flush()
        for path, subdir in self.artifacts:
            self._try(lambda p=path, s=subdir: self._log_artifact(p, s))
        status = "FAILED" if exc_type else "FINISHED"
        if self.run_id:
            self._try(lambda: self.client.set_terminated(self.run_id, status=status))
        if self.pending or self.failed:
            print(
                f"amcore: MLflow unreachable for stage {self.stage}; {len(self.pending)} metric values "
                "were not sent (they are in the stage's output files)",
                file=sys.stderr,
            )

    def _open(self) -> None:
        from mlflow.entities import Param, RunTag

        self.client = _client(self.state["uri"])
        run = self.client.create_run(
            self.state["experiment_id"],
            run_name="/".join([self.stage, *(v for k, v in self.tags.items() if k.startswith("snakemake.wildcard."))]),
            tags={"mlflow.parentRunId": self.state["parent_run_id"], **self.tags},
        )
        self.run_id = run.info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in self.params.items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i : i + 100])
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in self.tags.items()])

    def _try(self, action) -> bool:
        if self.state is None:
            return False
        try:
            if self.run_id is None and action != self._open:
                self._open()
            action()
            return True
        except Exception as err:  # noqa: BLE001 - tracking must never fail the stage
            if not self.failed:
                print(f"amcore: MLflow call failed for stage {self.stage} ({err}); continuing", file=sys.stderr)
            self.failed = True
            return False

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]

    def flush(self) -> None:
        """Send buffered metrics; on failure they stay buffered for the next flush."""
        if not self.pending:
            return

        def send() -> None:
            while self.pending:
                self.client.log_batch(self.run_id, metrics=self.pending[:1000])
                del self.pending[:1000]

        self._try(send)

    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None:
        self.artifacts.append((str(path), subdir))

    def _log_artifact(self, path: str, subdir: str | None) -> None:
        if Path(path).is_dir():
            self.client.log_artifacts(self.run_id, path, subdir)
        else:
            self.client.log_artifact(self.run_id, path, subdir)


def _flatten(params: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
