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

Disabled (``enabled=False``, ``mlflow.enabled: false`` or a process with ``$RANK`` other than 0):
every method is a no-op and MLflow is not even imported. Nothing here logs environment
variables; values that look like credentials are replaced by ``***``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
import uuid
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
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "unknown"


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[f"versions.{name}"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[f"versions.{name}"] = "not installed"
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
                 enabled: bool = True):
        self.cfg = dict(mlflow_cfg or {})
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
        log.info("MLflow run %s (%s) in experiment %r at %s", self.run_id, self.run_name or "unnamed", name,
                 redact_text(self.uri))
        return self

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

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Numeric values only (others are skipped); ``step`` defaults to 0."""
        if not self.active:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = []
        for k, v in metrics.items():
            value = _number(v)
            if value is None:
                log.debug("MLflow: metric %s=%r is not a number; skipped", k, v)
                continue
            batch.append(Metric(_key(k), value, now, int(step or 0)))
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

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        """``obj`` as JSON (or YAML for ``.yaml``/``.yml``) at ``artifact_file`` in the run's artifacts."""
        if not self.active:
            return
        self._safely(f"log {artifact_file}", self._client.log_dict, self.run_id, obj, artifact_file)


def start_run(mlflow_cfg: Mapping[str, Any] | None, run_name: str | None = None, stage: str | None = None,
              params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
              enabled: bool = True) -> Tracker:
    """A started ``Tracker`` (raises ``ConfigError`` now if the store cannot be reached); use with ``with``."""
    return Tracker(mlflow_cfg, run_name=run_name, stage=stage, params=params, tags=tags, enabled=enabled).start()


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
