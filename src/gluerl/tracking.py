"""MLflow tracking for every stage: one run per stage invocation, grouped by pipeline.

    with start_run(cfg["mlflow"], run_name="sft-qwen-rte", stage="sft",
                   params=flatten(cfg_section, "sft") | {"model": m, "seed": 1}) as tr:
        tr.log_metrics({"reward": 0.5}, step=10)
        tr.log_artifact("results/.../summary.json")

``start_run`` checks that the tracking store answers and raises ``ConfigError`` at once if it
does not, so a stage fails before its heavy work. After that, tracking is best effort: a failure
of MLflow while logging (metrics, artifacts, ending the run) is a warning, never an exception,
so finished work is never lost because of tracking. An exception raised by the caller's code
inside the ``with`` block marks the run FAILED and propagates.

Store: ``$MLFLOW_TRACKING_URI`` (if non-empty), else ``mlflow.tracking_uri``, else
``sqlite:///<cwd>/results/mlflow.db`` (no server needed). Runs of one pipeline invocation share
the tag ``gluerl.pipeline_id`` (env ``GLUERL_PIPELINE_ID``, else one id per process).

Runs of one Snakemake invocation nest under one parent run: the workflow's ``onstart`` hook calls
:func:`start_pipeline_run`, which opens the parent, prints its id and sets ``$GLUERL_PARENT_RUN_ID``
for the jobs (``onsuccess``/``onerror``: :func:`end_pipeline_run`); a stage run started with that
variable set carries the tag ``mlflow.parentRunId`` (the MLflow UI shows it nested). A stage run
outside Snakemake, or with the variable unset, is a top-level run as before.

Metric names are grouped by prefix (:func:`metric_key`): ``objective/`` (reward, accuracy, invalid
rate, KL and its coefficient), ``policy/`` (policy loss, entropy, clip fraction, approximate KL,
gradient norm), ``value/`` (value loss and clip fraction, explained variance, returns),
``answers/`` (predicted-label shares), ``time/``, ``train/`` (the Trainer's loss and learning
rate), ``eval/`` (evaluation metrics and their interval bounds); ``step`` is the step, never a
metric. System metrics (CPU, memory, disk, network; GPU with ``pynvml``) are sampled into every
stage run by MLflow's own monitor when ``psutil`` is installed, unless
``$MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING`` is ``false``. Data files are logged as dataset inputs
(:meth:`Tracker.log_datasets`).

Disabled (``enabled=False``, ``mlflow.enabled: false`` or a process with ``$RANK`` other than 0):
every method is a no-op and MLflow is not even imported. Nothing here logs environment
variables; values that look like credentials are replaced by ``***``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import threading
import time
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_DB = Path("results") / "mlflow.db"
PACKAGES = ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "gluerl", "mlflow")
CHECK_TIMEOUT_S = 5  # the reachability check waits at most this long for an HTTP store
MAX_PARAM_LEN = 6000  # MLflow 3's MAX_PARAM_VAL_LENGTH
MAX_TAG_LEN = 8000  # MLflow 3's MAX_TAG_VAL_LENGTH
MAX_KEY_LEN = 250  # MLflow's MAX_ENTITY_KEY_LENGTH
REDACTED = "***"

# key words that mark a credential: whole words of the key (so max_new_tokens is not one) ...
_SECRET_WORDS = {"token", "password", "passwd", "secret", "authorization", "apikey", "credential", "credentials"}
# ... or substrings anywhere in the key
_SECRET_PARTS = ("api_key", "api-key", "access_key", "private_key", "password", "secret")
_SECRET_VALUES = re.compile(r"hf_[A-Za-z0-9]{20,}")
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")  # https://user:pass@host -> https://***@host
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")  # MLflow keys: alphanumerics, _ - . space /

_process_pipeline_id: str | None = None

PARENT_ENV = "GLUERL_PARENT_RUN_ID"
NOT_METRICS = {"step", "max_new_tokens", "epoch_float"}  # the step axis and settings, not measurements
_GROUPS = {
    "objective": ("reward_mean", "reward", "reward_std", "accuracy", "invalid_rate", "kl", "kl_coef", "kl_coef_next",
                  "frac_reward_zero_std"),
    "policy": ("policy_loss", "entropy", "clipfrac", "approx_kl", "grad_norm", "response_length"),
    "value": ("value_loss", "value_clipfrac", "explained_variance", "return_mean"),
    "time": ("tokens_per_second", "seconds_generation", "seconds_scoring", "seconds_optimisation", "seconds_step",
             "step_time"),
    "train": ("loss", "learning_rate", "num_tokens", "mean_token_accuracy", "entropy_sft", "epoch", "episodes"),
}
_GROUP_OF = {k: g for g, keys in _GROUPS.items() for k in keys}


class Terminated(SystemExit):
    """SIGTERM received inside a tracked block (exit status 143, as the default action gives)."""


def _raise_terminated(signum, frame):
    raise Terminated(128 + signum)


# ----------------------------------------------------------------------------- helpers

def flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (``prefix="x"`` -> ``{"x.a.b": 1}``); lists stay leaves."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def is_secret_key(key: str) -> bool:
    low = str(key).lower()
    words = re.split(r"[^a-z0-9]+", low)
    return (any(w in _SECRET_WORDS or w.endswith("token") for w in words)
            or any(p in low for p in _SECRET_PARTS))


def redact_text(text: str) -> str:
    """Hide credential-looking parts of a value: Hugging Face tokens, URL user:password@."""
    return _URL_USERINFO.sub(REDACTED + "@", _SECRET_VALUES.sub(REDACTED, text))


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, default=str)
    return str(value)


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    suffix = f"...[truncated {len(text)} chars]"
    return text[: limit - len(suffix)] + suffix


def _key(key: Any) -> str:
    return _BAD_KEY_CHARS.sub("_", str(key))[:MAX_KEY_LEN]


def clean_params(params: Mapping[str, Any], limit: int = MAX_PARAM_LEN) -> dict[str, str]:
    """Params as MLflow takes them: string values, credentials as ``***``, long values cut."""
    out = {}
    for k, v in params.items():
        value = REDACTED if is_secret_key(k) else redact_text(_to_str(v))
        out[_key(k)] = _truncate(value, limit)
    return out


def resolve_uri(mlflow_cfg: Mapping[str, Any] | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` (non-empty) > ``mlflow_cfg["tracking_uri"]`` > ``sqlite:///<cwd>/results/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    cfg_uri = (mlflow_cfg or {}).get("tracking_uri")
    if cfg_uri:
        return str(cfg_uri)
    db = DEFAULT_DB.resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def pipeline_id() -> str:
    """``$GLUERL_PIPELINE_ID`` (set once per workflow invocation), else one id for this process."""
    global _process_pipeline_id
    env = os.environ.get("GLUERL_PIPELINE_ID", "").strip()
    if env:
        return env
    if _process_pipeline_id is None:
        _process_pipeline_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]
    return _process_pipeline_id


def git_commit(cwd: str | Path | None = None) -> str:
    from .records import git_commit as commit

    return commit(cwd) or "unknown"


def package_versions() -> dict[str, str]:
    from .records import package_versions as versions

    return {f"versions.{k}": v or "not installed" for k, v in versions(PACKAGES).items()}


def metric_key(name: str, prefix: str | None = None) -> str | None:
    """The grouped MLflow name of a logged value (``kl`` -> ``objective/kl``), ``None`` for one that is
    not a metric (``step``, ``max_new_tokens``). With ``prefix``, ``prefix/`` + the name with dots
    as slashes (``eval`` and ``rte.accuracy`` -> ``eval/rte/accuracy``). Names that already hold a
    ``/`` (TRL's ``rewards/...``, ``completions/...``) keep it, under ``answers/`` for ``pred_frac/``."""
    if prefix:
        return f"{prefix}/{name.replace('.', '/')}"
    if name in NOT_METRICS:
        return None
    if name.startswith("pred_frac/"):
        return "answers/" + name[len("pred_frac/"):]
    if "/" in name:
        return name
    if name.startswith("final."):
        inner = metric_key(name[len("final."):])
        return None if inner is None else f"final/{inner}"
    group = _GROUP_OF.get(name)
    return f"{group}/{name}" if group else name


def eval_metrics(column: str, result: Mapping[str, Any]) -> dict[str, float]:
    """An evaluation column's numbers as ``eval/`` metrics, its interval bounds as ``..._ci_lo/_ci_hi``."""
    out = {f"eval/{column}/{k}": v for k, v in result.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for k, bounds in (result.get("ci") or {}).items():
        if isinstance(bounds, (list, tuple)) and len(bounds) == 2:
            out[f"eval/{column}/{k}_ci_lo"], out[f"eval/{column}/{k}_ci_hi"] = bounds
    return out


def _is_main_process() -> bool:
    try:
        return int(os.environ.get("RANK", "0") or 0) == 0
    except ValueError:
        return True


def _sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):].split("?", 1)[0]
        if path and path != ":memory:":
            return Path(path)
    return None


@contextlib.contextmanager
def _env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _file_lock(path: Path | None):
    """Serialise the creation of a SQLite store and its experiment across parallel jobs."""
    if path is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _reason(e: BaseException) -> str:
    """The error's own message, cut short, and its root cause (``ConnectionRefusedError: ...``)."""
    def text(x: BaseException) -> str:
        return f"{type(x).__name__}: {' '.join(str(x).split()) or 'no message'}"

    root, seen = e, set()
    while (root.__cause__ or root.__context__) is not None and id(root) not in seen:
        seen.add(id(root))
        root = root.__cause__ or root.__context__
    reason = _truncate(text(e), 240) + (f" <- root cause {_truncate(text(root), 200)}" if root is not e else "")
    return redact_text(reason)


def check_store(uri: str, timeout_s: float = CHECK_TIMEOUT_S):
    """An ``MlflowClient`` for ``uri`` after one cheap request; ``ConfigError`` naming the URI if it fails."""
    from mlflow import MlflowClient

    try:
        with _env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=str(int(timeout_s))):
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - any failure means the store is not usable
        raise ConfigError(
            f"MLflow tracking store {redact_text(uri)} cannot be reached: {_reason(e)}; "
            "set MLFLOW_TRACKING_URI or mlflow.tracking_uri, or mlflow.enabled: false") from e
    return client


# ----------------------------------------------------------------------------- the run

class Tracker:
    """One MLflow run; use ``start_run(...)`` as a context manager. Disabled: every method is a no-op."""

    def __init__(self, mlflow_cfg: Mapping[str, Any] | None, run_name: str | None = None, stage: str | None = None,
                 params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
                 enabled: bool = True, parent_run_id: str | None = None, system_metrics: bool | None = None):
        """``parent_run_id``: the run this one nests under (default ``$GLUERL_PARENT_RUN_ID``, ``""``: none);
        ``system_metrics``: sample CPU/memory/GPU into the run (default: on, unless
        ``$MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING`` is false or psutil is missing)."""
        self.cfg = dict(mlflow_cfg or {})
        self.parent_run_id = os.environ.get(PARENT_ENV, "").strip() if parent_run_id is None else parent_run_id
        self.system_metrics = system_metrics
        self._monitor = None
        self.run_name = run_name
        self.stage = stage
        self.enabled = bool(enabled and self.cfg.get("enabled", True) and _is_main_process())
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
        name = self.cfg.get("experiment") or "gluerl"
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

        from .io import read_jsonl

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
        from .io import write_json

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
    print(f"MLflow: parent run {tracker.run_id} (experiment {tracker.cfg.get('experiment') or 'gluerl'}, "
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


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    item = getattr(v, "item", None)  # numpy / torch scalars; more than one element: not a number
    if callable(item):
        try:
            x = item()
        except (TypeError, ValueError, RuntimeError):
            return None
        return float(x) if isinstance(x, (int, float)) else None
    return None


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


def __getattr__(name: str):
    # MlflowTrainerCallback is built on first use: importing transformers takes seconds, and the
    # stages that only evaluate or assemble tables need not pay for it.
    if name == "MlflowTrainerCallback":
        cls = _make_callback_class()
        cls.__module__ = __name__
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
