"""Where runs go and what they record of the code: the store's URI and its check, the pipeline id,
git commit and package versions, and the lock that serialises creating a SQLite store."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .params import _truncate, redact_text

DEFAULT_DB = Path("results") / "mlflow.db"
PACKAGES = ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "gluerl", "mlflow")
CHECK_TIMEOUT_S = 5  # the reachability check waits at most this long for an HTTP store

_process_pipeline_id: str | None = None


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
    from ..records import git_commit as commit

    return commit(cwd) or "unknown"


def package_versions() -> dict[str, str]:
    from ..records import package_versions as versions

    return {f"versions.{k}": v or "not installed" for k, v in versions(PACKAGES).items()}


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
