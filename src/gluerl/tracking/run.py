"""The MLflow run of a stage (:class:`Tracker`, :func:`start_run`), the parent run of a workflow
invocation (:func:`start_pipeline_run`, :func:`end_pipeline_run`) and the Trainer callback."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import section
from ..errors import ConfigError
from .params import MAX_TAG_LEN, _key, _number, clean_params, metric_key, redact_text
from .store import _env, _file_lock, _sqlite_path, check_store, git_commit, package_versions, pipeline_id, resolve_uri

log = logging.getLogger(__package__)

PARENT_ENV = "GLUERL_PARENT_RUN_ID"


class Terminated(SystemExit):
    """SIGTERM received inside a tracked block (exit status 143, as the default action gives)."""


def _raise_terminated(signum, frame):
    raise Terminated(128 + signum)


def _is_main_process() -> bool:
    try:
        return int(os.environ.get("RANK", "0") or 0) == 0
    except ValueError:
        return True


class Tracker:
    """One MLflow run; use ``start_run(...)`` as a context manager. Disabled: every method is a no-op."""

    def __init__(self, mlflow_cfg: Mapping[str, Any] | None, run_name: str | None = None, stage: str | None = None,
                 params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
                 enabled: bool = True, parent_run_id: str | None = None, system_metrics: bool | None = None):
        """``parent_run_id``: the run this one nests under (default ``$GLUERL_PARENT_RUN_ID``, ``""``: none);
        ``system_metrics``: sample CPU/memory/GPU into the run (default: on, unless
        ``$MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING`` is false or psutil is missing)."""
        self.cfg = section("mlflow", dict(mlflow_cfg or {}))  # the schema's defaults filled in
        self.parent_run_id = os.environ.get(PARENT_ENV, "").strip() if parent_run_id is None else parent_run_id
        self.system_metrics = system_metrics
        self._monitor = None
        self.run_name = run_name
        self.stage = stage
        self.enabled = bool(enabled and self.cfg["enabled"] and _is_main_process())
        self._params = dict(params or {})
        self._tags = dict(tags or {})
        self.uri: str | None = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._client = None

    # -- lifecycle

    def start(self) -> "Tracker":
        """Check the store, create the experiment if missing, open the run, log params and tags."""
        if not self.enabled or self.run_id is not None:
            return self
        from mlflow.entities import Param, RunTag

        self.uri = resolve_uri(self.cfg)
        sqlite = _sqlite_path(self.uri)
        name = self.cfg["experiment"] or "gluerl"
        with _file_lock(sqlite):
            client = check_store(self.uri)
            try:
                self.experiment_id = self._experiment(client, name, sqlite)
                commit = git_commit()
                tags = {"gluerl.pipeline_id": pipeline_id(), "mlflow.source.git.commit": commit}
                if self.stage:
                    tags["gluerl.stage"] = self.stage
                if self.parent_run_id:
                    tags["mlflow.parentRunId"] = self.parent_run_id
                tags.update(self._tags)
                params = {**self._params, "git_commit": commit, **package_versions()}
                run = client.create_run(self.experiment_id, run_name=self.run_name)
                self.run_id = run.info.run_id
                self._client = client
                client.log_batch(self.run_id,
                                 params=[Param(k, v) for k, v in clean_params(params).items()],
                                 tags=[RunTag(k, v) for k, v in clean_params(tags, MAX_TAG_LEN).items()])
            except ConfigError:
                raise
            except Exception as e:  # noqa: BLE001
                if self.run_id is not None:
                    self._safely("mark the run FAILED", self._terminate, client, "FAILED")
                raise ConfigError(f"MLflow tracking store {redact_text(self.uri)}: cannot start a run in "
                                  f"experiment {name!r}: {redact_text(str(e))[:300]}") from e
        log.info("MLflow run %s (%s) in experiment %r at %s%s", self.run_id, self.run_name or "unnamed", name,
                 redact_text(self.uri), f", nested in {self.parent_run_id}" if self.parent_run_id else "")
        self._start_monitor()
        return self

    def _start_monitor(self) -> None:
        wanted = self.system_metrics
        if wanted is None:
            wanted = os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true").strip().lower() not in (
                "false", "0", "no", "off")
        if not wanted:
            return
        try:
            import psutil  # noqa: F401 - MLflow's monitor needs it
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            with _quiet("mlflow.system_metrics"):
                self._monitor = SystemMetricsMonitor(self.run_id, tracking_uri=self.uri)
                self._monitor.start()
        except Exception as e:  # noqa: BLE001 - optional: no psutil, an old MLflow
            log.debug("MLflow: no system metrics (%s)", e)
            self._monitor = None

    def _stop_monitor(self) -> None:
        if self._monitor is not None:
            with _quiet("mlflow.system_metrics"):
                self._safely("stop the system metrics monitor", self._monitor.finish)
            self._monitor = None

    @staticmethod
    def _experiment(client, name: str, sqlite: Path | None) -> str:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            # a SQLite store keeps its artifacts beside the database, not in ./mlruns
            location = (sqlite.resolve().parent / "mlartifacts").as_uri() if sqlite else None
            try:
                return client.create_experiment(name, artifact_location=location)
            except Exception:  # noqa: BLE001 - another job may have created it meanwhile
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    raise
        if exp.lifecycle_stage != "active":
            raise ConfigError(f"MLflow experiment {name!r} is deleted; restore it (mlflow experiments restore) "
                              "or set another mlflow.experiment")
        return exp.experiment_id

    def end(self, status: str = "FINISHED") -> None:
        """Close the run with ``status``; a failure is only a warning."""
        if not self.enabled or self.run_id is None or self._client is None:
            return
        self._stop_monitor()
        self._safely(f"end the run as {status}", self._terminate, self._client, status)
        self._client = None

    def _terminate(self, client, status: str) -> None:
        """``set_terminated``; MLflow's own 'View run at <uri>' line is replaced by one without credentials."""
        with _env(MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="true"):
            client.set_terminated(self.run_id, status)
        if self.uri and self.uri.startswith(("http://", "https://")):
            log.info("MLflow run %s ended %s: %s/#/experiments/%s/runs/%s", self.run_id, status,
                     redact_text(self.uri).rstrip("/"), self.experiment_id, self.run_id)

    def __enter__(self) -> "Tracker":
        tracker = self.start()
        # SIGTERM (Snakemake stopping its jobs, a scheduler's kill) ends the run as KILLED rather
        # than leaving it RUNNING forever: it becomes an exception the block's exit sees
        self._old_sigterm = None
        if self.active and threading.current_thread() is threading.main_thread():
            self._old_sigterm = signal.signal(signal.SIGTERM, _raise_terminated)
        return tracker

    def __exit__(self, exc_type, exc, tb) -> bool:
        old = getattr(self, "_old_sigterm", None)
        if old is not None:
            signal.signal(signal.SIGTERM, old)
        if exc_type is None:
            self.end("FINISHED")
        else:
            if self.enabled and self.run_id is not None:
                self.set_tags({"gluerl.error": f"{exc_type.__name__}: {exc}"})
            self.end("KILLED" if issubclass(exc_type, (KeyboardInterrupt, Terminated)) else "FAILED")
        return False  # never swallow the caller's exception

    # -- logging (best effort once the run has started)

    def _safely(self, what: str, fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - tracking must not break finished work
            log.warning("MLflow: could not %s (run %s at %s): %s", what, self.run_id, redact_text(self.uri or ""),
                        redact_text(str(e))[:500])

    @property
    def active(self) -> bool:
        return self.enabled and self._client is not None

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, prefix: str | None = None,
                    grouped: bool = True) -> None:
        """Numeric values only (others are skipped) at ``step`` (default 0), under their grouped names
        (:func:`metric_key`; ``prefix``: all under ``prefix/``; ``grouped=False``: names as given)."""
        if not self.active:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = []
        for k, v in metrics.items():
            name = metric_key(str(k), prefix) if grouped else str(k)
            if name is None:
                continue
            value = _number(v)
            if value is None:
                log.debug("MLflow: metric %s=%r is not a number; skipped", k, v)
                continue
            batch.append(Metric(_key(name), value, now, int(step or 0)))
        if batch:
            self._safely("log metrics", self._client.log_batch, self.run_id, metrics=batch)

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.active:
            return
        from mlflow.entities import Param

        batch = [Param(k, v) for k, v in clean_params(params).items()]
        self._safely("log params", self._client.log_batch, self.run_id, params=batch)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.active:
            return
        from mlflow.entities import RunTag

        batch = [RunTag(k, v) for k, v in clean_params(tags, MAX_TAG_LEN).items()]
        self._safely("set tags", self._client.log_batch, self.run_id, tags=batch)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """A file, or a folder's contents, under ``artifact_path`` in the run's artifacts."""
        if not self.active:
            return
        path = Path(path)
        if path.is_dir():
            self._safely(f"log artifacts {path}", self._client.log_artifacts, self.run_id, str(path), artifact_path)
        elif path.is_file():
            self._safely(f"log artifact {path}", self._client.log_artifact, self.run_id, str(path), artifact_path)
        else:
            log.warning("MLflow: artifact %s does not exist; not logged", path)

    def log_datasets(self, files: Mapping[str, str | Path], context: str) -> None:
        """Prompt or data files (name -> JSONL path) as the run's dataset inputs (``context``:
        ``training`` or ``evaluation``): MLflow's pandas dataset with the file as source, a digest
        of its content, its schema and row count; ``label`` is the target column."""
        if not self.active:
            return
        for name, path in files.items():
            self._safely(f"log dataset {path}", self._log_dataset, name, Path(path), context)

    def _log_dataset(self, name: str, path: Path, context: str) -> None:
        import mlflow.data
        import pandas as pd
        from mlflow.entities import DatasetInput, InputTag

        from ..io import read_jsonl

        rows = read_jsonl(path)
        df = pd.DataFrame([{"idx": json.dumps(r.get("idx")), "label": r.get("label"),
                            "prompt": r["messages"][-1]["content"] if r.get("messages") else None} for r in rows])
        with _quiet("mlflow.data"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MLflow's schema hints and pandas deprecations: nothing to act on
            ds = mlflow.data.from_pandas(df, source=str(path.resolve()), name=name, targets="label")
        self._client.log_inputs(self.run_id, [DatasetInput(ds._to_mlflow_entity(),
                                                           [InputTag("mlflow.data.context", context)])])

    def write_reference(self, path: str | Path) -> None:
        """``{run_id, experiment_id, tracking_uri}`` as JSON at ``path`` (beside a training run's
        adapter), so the stage that evaluates the adapter can link to this run."""
        if not self.active:
            return
        from ..io import write_json

        write_json(path, {"run_id": self.run_id, "experiment_id": self.experiment_id,
                          "tracking_uri": redact_text(self.uri or "")})

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        """``obj`` as JSON (or YAML for ``.yaml``/``.yml``) at ``artifact_file`` in the run's artifacts."""
        if not self.active:
            return
        self._safely(f"log {artifact_file}", self._client.log_dict, self.run_id, obj, artifact_file)


def start_run(mlflow_cfg: Mapping[str, Any] | None, run_name: str | None = None, stage: str | None = None,
              params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
              enabled: bool = True, **kwargs: Any) -> Tracker:
    """A started ``Tracker`` (raises ``ConfigError`` now if the store cannot be reached); use with ``with``."""
    return Tracker(mlflow_cfg, run_name=run_name, stage=stage, params=params, tags=tags, enabled=enabled,
                   **kwargs).start()


RUN_REFERENCE = "mlflow_run.json"  # beside a training run's adapter: which MLflow run made it


def training_run_of(adapter_dir: str | Path | None) -> str | None:
    """The MLflow run id recorded beside an adapter (``None``: no adapter, no record)."""
    if not adapter_dir:
        return None
    path = Path(adapter_dir) / RUN_REFERENCE
    try:
        return json.loads(path.read_text()).get("run_id") or None
    except (OSError, ValueError, AttributeError):
        return None


_pipeline: Tracker | None = None


def start_pipeline_run(mlflow_cfg: Mapping[str, Any] | None, name: str | None = None,
                       params: Mapping[str, Any] | None = None) -> str | None:
    """Open the parent run of a workflow invocation and export its id (``$GLUERL_PARENT_RUN_ID``) to
    the jobs; print it. Nothing when tracking is off or a parent is already set (a cluster job's
    own Snakemake inherits the variable). Returns the id."""
    global _pipeline
    if os.environ.get(PARENT_ENV, "").strip():
        return os.environ[PARENT_ENV]
    tracker = Tracker(mlflow_cfg, run_name=name or f"snakemake {pipeline_id()}", stage="pipeline", params=params,
                      parent_run_id="", system_metrics=False).start()
    if not tracker.active:
        return None
    _pipeline = tracker
    os.environ[PARENT_ENV] = tracker.run_id
    print(f"MLflow: parent run {tracker.run_id} (experiment {tracker.cfg['experiment'] or 'gluerl'}, "
          f"{redact_text(tracker.uri or '')}); every job's run nests under it", flush=True)
    return tracker.run_id


def end_pipeline_run(status: str = "FINISHED") -> None:
    """Close the parent run opened by :func:`start_pipeline_run` in this process."""
    global _pipeline
    if _pipeline is not None:
        _pipeline.end(status)
        os.environ.pop(PARENT_ENV, None)
        _pipeline = None


@contextlib.contextmanager
def _quiet(name: str):
    """MLflow's own INFO lines of ``name`` (monitor started/stopped, dataset digests) kept out of the logs."""
    lg = logging.getLogger(name)
    level = lg.level
    lg.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        lg.setLevel(level)


# ----------------------------------------------------------------------------- Trainer callback

def _make_callback_class():
    from transformers import TrainerCallback

    class MlflowTrainerCallback(TrainerCallback):
        """Logs the Trainer's ``logs`` (numeric values) as metrics at ``state.global_step``, main process only."""

        def __init__(self, tracker: Tracker):
            self.tracker = tracker

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and state.is_world_process_zero:
                numeric = {k: v for k, v in logs.items() if _number(v) is not None}
                self.tracker.log_metrics(numeric, step=state.global_step)

    return MlflowTrainerCallback
