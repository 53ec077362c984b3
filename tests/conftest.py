import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from types import SimpleNamespace

import pytest

# never touch the network: the hub libraries must work from local files only
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_TRACKING_URI", "")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random Llama with a tokenizer trained on the fixture texts (session-wide)."""
    from gluerl.testing import fixture_texts, make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", fixture_texts())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def template_db(tmp_path_factory):
    """An empty, migrated MLflow SQLite database: creating one takes seconds, copying it does not."""
    from gluerl import tracking

    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    tracking.check_store(f"sqlite:///{db}")
    return db


@pytest.fixture(scope="session")
def mlflow_server_process(tmp_path_factory):
    """``mlflow server`` on a free loopback port, SQLite backend, artifacts proxied (--serve-artifacts).

    Started once per session; ``mlflow_server`` waits until it answers. The server and its uvicorn worker run in a
    process group of their own, which the finalizer ends.
    """
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--serve-artifacts", "--artifacts-destination", str(root / "artifacts")]
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    with open(root / "server.log", "wb") as logf:
        proc = subprocess.Popen(cmd, cwd=root, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        yield SimpleNamespace(proc=proc, cmd=cmd, url=f"http://127.0.0.1:{port}", root=root)
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue


@pytest.fixture(scope="session")
def mlflow_server(mlflow_server_process):
    """The server once ``/health`` answers (at most 120 s after its start)."""
    srv = mlflow_server_process
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{srv.url}/health", timeout=2) as r:
                if r.status == 200:
                    return srv
        except OSError:
            pass
        if srv.proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"mlflow server did not start ({' '.join(srv.cmd)}):\n"
                        + (srv.root / "server.log").read_text(errors="replace")[-3000:])
        time.sleep(0.5)
