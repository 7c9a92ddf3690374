"""MLflow tracking: one parent run per pipeline invocation, one child run per stage.

The parent run is created once, before any job starts (Snakemake's ``onstart``), and its coordinates
are exported as environment variables that every job inherits, locally or through a cluster executor.
Tracking is best effort: when the backend fails, the stage carries on, keeps its metrics, retries at the
end and says so. Metrics also always land in the stage's own output files.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from amcore.errors import Terminated
from amcore.version import code_version, uncommitted_changes

# A dead server must fail fast: MLflow's defaults retry for minutes per call.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
# Stage logs are files: no progress bars when MLflow copies a model's files.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# A database error is reported once by the stage (`_said`): MLflow's own logger printed a two-part traceback for
# every retry (audit 30: 72 tracebacks and 3,132 log lines for a database on a full disk).
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

ENV_URI = "AMCORE_MLFLOW_URI"
ENV_EXPERIMENT = "AMCORE_MLFLOW_EXPERIMENT_ID"
ENV_PARENT = "AMCORE_MLFLOW_PARENT_RUN_ID"
ENV_NAME = "AMCORE_MLFLOW_RUN_PREFIX"  # the config's experiment: it names and tags every run of the invocation


def _said(err: BaseException) -> str:
    """An error of the tracking backend in a line: SQLAlchemy's run to the failed statement and its values."""
    lines = [line for line in str(err).splitlines() if line and not line.startswith(("[SQL:", "[parameters:", "(Back"))]
    said = " ".join(lines) or type(err).__name__
    return said if len(said) <= 300 else said[:297] + "..."


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


def start_parent(
    uri: str, experiment: str, results_dir: str | Path, tags: dict[str, str], config: dict | None = None
) -> None:
    """Create (once) the backend and the experiment, open the parent run and export its coordinates; the run
    carries the code's version and the whole resolved ``config`` (flattened into parameters where MLflow can name
    them, and all of it as ``config.json``). A pipeline run of the same results folder and experiment left RUNNING
    by a process of this machine that is gone (a kill -9) is marked KILLED, with its stages.

    An unreachable backend is reported and leaves the pipeline untracked rather than stopped.
    """
    for key in (ENV_URI, ENV_EXPERIMENT, ENV_PARENT, ENV_NAME):
        os.environ.pop(key, None)
    folder = str(Path(results_dir).resolve())
    tags = {"amcore.kind": "pipeline", "amcore.results_dir": folder, "amcore.host": socket.gethostname(),
            "amcore.pid": str(os.getpid()), **code_version(), **tags}  # fmt: skip
    try:
        from mlflow.tracking import MlflowClient  # before the lock: the import takes seconds

        with _creation_lock(uri):
            client = MlflowClient(tracking_uri=uri)  # opening a sqlite store creates and migrates its schema
            location = None
            if uri.startswith("sqlite:"):
                location = (Path(results_dir) / "mlartifacts").resolve().as_uri()
            experiment_id = _experiment_id(client, experiment, location)
        # the config's experiment in every run's name and tags: two configs sharing a tracker ran stages of one name
        # that only their parents told apart (audit 95)
        prefix = tags.get("amcore.experiment", "")
        run = client.create_run(experiment_id, run_name="/".join(filter(None, [prefix, "pipeline"])), tags=tags)
    except Exception as err:  # noqa: BLE001 - an unreachable tracker must not stop the pipeline
        print(f"amcore: MLflow at {uri} unavailable ({_said(err)}); this invocation is not tracked", file=sys.stderr)
        return
    os.environ.update({ENV_URI: uri, ENV_EXPERIMENT: experiment_id, ENV_PARENT: run.info.run_id, ENV_NAME: prefix})
    print(f"amcore: MLflow parent run {run.info.run_id} at {uri}", file=sys.stderr)
    try:  # what follows is a record of the invocation: its failure never untracks it
        _close_killed(client, experiment_id, tags, run.info.run_id)
        if config is not None:
            _log_params(client, run.info.run_id, _flatten(config))
            client.log_text(run.info.run_id, json.dumps(config, indent=1, sort_keys=True), "config.json")
        if changes := uncommitted_changes():  # the code a dirty tree ran: its commit and this patch rebuild it
            with tempfile.TemporaryDirectory() as folder:  # its bytes as they are (a change need not be UTF-8)
                (Path(folder) / "code.patch").write_bytes(changes)
                client.log_artifact(run.info.run_id, str(Path(folder) / "code.patch"))
    except Exception as err:  # noqa: BLE001 - tracking must never fail the pipeline
        print(f"amcore: could not record the config or close killed runs in MLflow ({_said(err)})", file=sys.stderr)


def _close_killed(client, experiment_id: str, tags: dict, current: str) -> None:
    """Mark KILLED the pipeline runs of the same results folder and experiment left RUNNING by a process of this
    machine that no longer exists, and their stages left RUNNING. Another machine's run, or one whose process
    lives (a second invocation beside this one), is left alone. Compared here, not in the filter string, where a
    quote in a path would break the query."""
    same = ("amcore.results_dir", "amcore.experiment", "amcore.host")
    for parent in client.search_runs(
        [experiment_id], "attributes.status = 'RUNNING' and tags.`amcore.kind` = 'pipeline'"
    ):
        theirs = parent.data.tags
        if parent.info.run_id == current or any(theirs.get(key) != tags.get(key) for key in same):
            continue
        if _alive(int(theirs.get("amcore.pid", "0") or 0)):
            continue
        stages = client.search_runs(
            [experiment_id], f"attributes.status = 'RUNNING' and tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
        )
        for run in [*stages, parent]:
            client.set_terminated(run.info.run_id, status="KILLED")
        print(f"amcore: MLflow run {parent.info.run_id} of {tags['amcore.results_dir']} was left RUNNING by an "
              f"invocation that is gone (killed): marked KILLED with {len(stages)} of its stages",
              file=sys.stderr)  # fmt: skip


def _alive(pid: int) -> bool:
    """Whether a process of this machine with that id exists (0: unknown, taken as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


# MLflow's rule for a parameter's name; a config key outside it (a time_map label "day=3 (a)") stays in config.json.
PARAM_NAME = re.compile(r"[/\w.\- :]+")


def _log_params(client, run_id: str, params: dict) -> None:
    """Parameters in MLflow's batches of 100, each value cut to MLflow's 6,000 characters; names MLflow refuses
    are left out, and said."""
    from mlflow.entities import Param

    batch = [Param(k, str(v)[:6000]) for k, v in params.items() if PARAM_NAME.fullmatch(k)]
    if skipped := [k for k in params if not PARAM_NAME.fullmatch(k)]:
        print(f"amcore: MLflow names no parameter {skipped[:5]}{' ...' if len(skipped) > 5 else ''}: left out of the "
              "run's parameters (the stage's own files, and the pipeline run's config.json, hold them)",
              file=sys.stderr)  # fmt: skip
    for i in range(0, len(batch), 100):
        client.log_batch(run_id, params=batch[i : i + 100])


@contextmanager
def _creation_lock(uri: str, timeout_s: float = 300.0):
    """Hold ``<db>.lock`` beside a sqlite database: MLflow creates and migrates its schema on first use, and
    pipelines started together on a fresh file race on it ("duplicate column name"). Servers need no lock."""
    from amcore.models.mlflow_model import sqlite_path  # MLflow is imported by now: nothing more to load

    path = sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path}.lock held for more than {timeout_s:.0f} s") from None
                time.sleep(0.1)
        yield  # closing the file releases the lock, also when the body raises


def _experiment_id(client, name: str, artifact_location: str | None) -> str:
    """Find or create the experiment; another invocation may create it between the two (any backend)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id


_STOPS: list[int] = []


def note_stops() -> None:
    """Remember a SIGINT or SIGTERM to this process (Ctrl-C, a cluster stopping the Snakemake job) and hand it on
    to the handler before: Snakemake's ``onerror`` is not told why the run ended, and its parent run read FAILED
    where it was stopped (audit 86). :func:`end_parent` then closes it KILLED."""
    _STOPS.clear()  # an earlier invocation in this process (Snakemake's API) does not make this one's failure a stop
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        before = signal.getsignal(sig)
        if before == signal.SIG_IGN or getattr(before, "notes_stops", False):  # ignored, or noted already
            continue

        def noted(signum, frame, before=before):
            _STOPS.append(signum)
            if callable(before):
                return before(signum, frame)
            signal.signal(signum, signal.SIG_DFL)  # the default: end the process as the signal would have
            signal.raise_signal(signum)

        noted.notes_stops = True
        signal.signal(sig, noted)


def end_parent(status: str) -> None:
    """Close the parent run ``status``; a failure after a stop was asked for (:func:`note_stops`) is KILLED."""
    if status == "FAILED" and _STOPS:
        status = "KILLED"
    state = _read_state()
    if state:
        try:
            _client(state["uri"]).set_terminated(state["parent_run_id"], status=status)
        except Exception as err:  # noqa: BLE001 - tracking must never fail the pipeline
            print(f"amcore: could not close the MLflow parent run ({_said(err)})", file=sys.stderr)


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
        print(f"amcore: could not attach {paths} to the MLflow parent run ({_said(err)})", file=sys.stderr)


def _read_state() -> dict | None:
    if not os.environ.get(ENV_PARENT):
        return None
    return {
        "uri": os.environ[ENV_URI],
        "experiment_id": os.environ[ENV_EXPERIMENT],
        "parent_run_id": os.environ[ENV_PARENT],
        "prefix": os.environ.get(ENV_NAME, ""),
    }


class StageRun:
    """A child run for one stage. Metrics are queued and sent by a background thread, so a slow or dead
    backend never stalls the stage; what is still queued at the end gets one bounded last try, and the
    stage says how many values did not arrive (its output files hold them all)."""

    def __init__(self, stage: str, tags: dict[str, str], params: dict, final_wait_s: float = 60.0) -> None:
        # Under torchrun only rank 0 reports: one stage, one run.
        self.state = _read_state() if int(os.environ.get("RANK", "0")) == 0 else None
        self.stage = stage
        code = code_version() if self.state is not None else {}  # git runs only for a tracked stage
        named = {"amcore.experiment": self.state["prefix"]} if self.state and self.state["prefix"] else {}
        self.tags = {"amcore.kind": "stage", "amcore.stage": stage, **named, **code, **tags}
        self.params = _flatten(params)
        self.run_id: str | None = None  # set once the run exists with its parameters and tags
        self._created: str | None = None  # the run, from its creation on: a retry never creates a second one
        self.pending: list = []
        self.pending_params: dict = {}
        self.artifacts: list[tuple[str, str | None]] = []
        self.models: list[tuple[str, str]] = []  # (checkpoint, name): MLflow models logged at the end
        self.failures = 0
        self.final_wait_s = final_wait_s
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sender, name=f"mlflow-{stage}", daemon=True)
        if self.state is None and int(os.environ.get("RANK", "0")) == 0:
            print(f"amcore: no MLflow parent run ({ENV_PARENT} unset); stage {stage} is not tracked", file=sys.stderr)

    def __enter__(self) -> StageRun:
        if self.state is not None:
            self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.state is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join()
        stopped = exc_type is not None and issubclass(exc_type, (KeyboardInterrupt, Terminated))
        # stopped from outside: a cluster kills the job outright soon (SLURM's KillWait, 30 s by default)
        deadline = time.monotonic() + (min(self.final_wait_s, 5.0) if stopped else self.final_wait_s)
        while time.monotonic() < deadline and not self._attempt(self._send_pending):
            time.sleep(2.0)
        for path, subdir in self.artifacts:
            self._attempt(lambda p=path, s=subdir: self._log_artifact(p, s))
        for checkpoint, name in self.models:
            self._attempt(lambda c=checkpoint, n=name: self._log_model(c, n))
        status = "KILLED" if stopped else "FAILED" if exc_type else "FINISHED"
        if self._created:
            self._attempt(lambda: self.client.set_terminated(self._created, status=status))
        if self.pending or self.run_id is None:
            print(
                f"amcore: MLflow did not take {len(self.pending)} metric values of stage {self.stage}; "
                "the stage's output files hold them all",
                file=sys.stderr,
            )
        elif self.failures:
            print(f"amcore: MLflow recovered; every metric of stage {self.stage} arrived", file=sys.stderr)

    def _sender(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            self._wake.wait(timeout=backoff)
            self._wake.clear()
            if self._stop.is_set():
                return
            backoff = 1.0 if self._attempt(self._send_pending) else min(30.0, backoff * 2)

    def _open(self) -> None:
        from mlflow.entities import RunTag

        if self._created is None:
            self.client = _client(self.state["uri"])
            wildcards = [v for k, v in self.tags.items() if k.startswith("snakemake.wildcard.")]
            self._created = self.client.create_run(
                self.state["experiment_id"],
                run_name="/".join(filter(None, [self.state["prefix"], self.stage, *wildcards])),
                tags={"mlflow.parentRunId": self.state["parent_run_id"], **self.tags},
            ).info.run_id
        _log_params(self.client, self._created, self.params)  # the same values again on a retry
        self.client.log_batch(self._created, tags=[RunTag(k, str(v)) for k, v in self.tags.items()])
        self.run_id = self._created

    def _send_pending(self) -> None:
        from mlflow.exceptions import MlflowException

        with self._lock:
            params, self.pending_params = self.pending_params, {}
        try:
            if params:
                _log_params(self.client, self.run_id, params)
        except MlflowException as err:  # refused (a value that changed): dropped, never holding the metrics back
            if err.error_code != "INVALID_PARAMETER_VALUE":
                with self._lock:
                    self.pending_params = {**params, **self.pending_params}
                raise
            print(f"amcore: MLflow refused parameters of stage {self.stage} ({_said(err)}); left out", file=sys.stderr)
        except Exception:
            with self._lock:  # the backend is away: sent again with the metrics
                self.pending_params = {**params, **self.pending_params}
            raise
        while True:
            with self._lock:
                batch = self.pending[:1000]
            if not batch:
                return
            self.client.log_batch(self.run_id, metrics=batch)
            with self._lock:
                del self.pending[: len(batch)]

    def _attempt(self, action) -> bool:
        """Run ``action`` (opening the run first if needed); report the first failure only."""
        try:
            if self.run_id is None:
                self._open()
            action()
            return True
        except Exception as err:  # noqa: BLE001 - tracking must never fail the stage
            if not self.failures:
                print(f"amcore: MLflow call failed for stage {self.stage} ({_said(err)}); carrying on", file=sys.stderr)
            self.failures += 1
            return False

    def log_params(self, params: dict) -> None:
        """Parameters known only once the stage has read its input (the data's SHA-256): queued, and sent as the
        metrics are."""
        if self.state is None:
            return
        with self._lock:
            self.pending_params.update(_flatten(params))

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        if self.state is None:
            return  # untracked: importing mlflow (seconds) to queue values never sent would only cost time
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        with self._lock:
            self.pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]

    def flush(self) -> None:
        """Ask the sender thread to send what is queued; returns at once."""
        self._wake.set()

    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None:
        self.artifacts.append((str(path), subdir))

    def _log_artifact(self, path: str, subdir: str | None) -> None:
        if Path(path).is_dir():
            self.client.log_artifacts(self.run_id, path, subdir)
        else:
            self.client.log_artifact(self.run_id, path, subdir)

    def log_model(self, checkpoint: str | Path, name: str = "model") -> None:
        """Log the checkpoint as an MLflow model (a pyfunc) named ``name``, at the end like the artifacts:
        ``runs:/<run_id>/<name>`` loads it, with ``mlflow.pyfunc.load_model`` or ``amcore.load``."""
        self.models.append((str(checkpoint), name))

    def _log_model(self, checkpoint: str, name: str) -> None:
        started = time.monotonic()
        from amcore.models.mlflow_model import log_model

        model_id = log_model(self.client, self.run_id, checkpoint, name)
        print(
            f"amcore: MLflow model runs:/{self.run_id}/{name} (models:/{model_id}) logged in "
            f"{time.monotonic() - started:.1f}s",
            file=sys.stderr,
        )


def _flatten(params: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
