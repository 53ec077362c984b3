"""Headless Chromium screenshots of the pages a run leaves: the Snakemake report, the MLflow UI
(the latest parent run with its nested runs, and the grouped metric charts of a training run),
and the offline DVC plots. ``scripts/screenshots.py`` is the command.

The browser is the system's Chromium (``apt-get install chromium`` on Debian; Playwright's
browser download needs the internet). Pages are loaded with every host name unresolvable except
127.0.0.1, so a page that needs the network shows up blank instead of passing by luck;
:func:`blank` says whether a screenshot holds next to nothing. Known limit: in MLflow 3.17's run
page the metric charts are laid out in their groups (``objective``, ``policy``, ...) but their
plots are still loading when headless Chromium's time budget ends; the groups' names and counts
show, the curves do not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from .errors import ConfigError

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser() -> str | None:
    """The first Chromium-family browser on PATH (``$GLUERL_BROWSER`` first), or None."""
    for name in (os.environ.get("GLUERL_BROWSER"), *BROWSERS):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def screenshot(url: str, png: str | Path, width: int = 1400, height: int = 900, wait_ms: int = 8000,
               exe: str | None = None) -> Path:
    """A PNG of ``url`` after ``wait_ms`` of (virtual) time, no network beyond 127.0.0.1."""
    exe = exe or browser()
    if exe is None:
        raise ConfigError("no Chromium found (apt-get install chromium, or set GLUERL_BROWSER)")
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gluerl-chromium-") as profile:
        cmd = [exe, "--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
               "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--virtual-time-budget={wait_ms}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
               f"--screenshot={png}", url]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.insert(1, "--no-sandbox")  # Chromium refuses to run its sandbox as root
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or not png.is_file():
        raise ConfigError(f"{Path(exe).name} could not screenshot {url}: {proc.stderr.strip()[-1000:]}")
    return png


def blank(png: str | Path, threshold: float = 0.005) -> bool:
    """Whether fewer than ``threshold`` of the pixels differ from the most common colour."""
    from PIL import Image

    img = Image.open(png).convert("RGB")
    colours = img.getcolors(maxcolors=img.width * img.height)
    most = max(count for count, _ in colours)
    return 1 - most / (img.width * img.height) < threshold


def file_url(path: str | Path) -> str:
    return Path(path).resolve().as_uri()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_ui(store_uri: str, timeout_s: float = 120) -> Iterator[str]:
    """``mlflow ui`` on the store at a free loopback port, until the block ends; yields its URL."""
    port = _free_port()
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store_uri, "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise ConfigError(f"mlflow ui did not start: {log.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        log.close()


def mlflow_pages(store_uri: str, experiment: str | None = None) -> dict[str, str]:
    """UI paths worth a look: the experiment's runs (the latest parent run and its nested runs), the
    parent run, and the metric charts of its training run with the most metrics."""
    from mlflow import MlflowClient

    client = MlflowClient(store_uri)
    exps = [client.get_experiment_by_name(experiment)] if experiment else client.search_experiments()
    exps = [e for e in exps if e is not None and e.name != "Default"] or [e for e in exps if e is not None]
    if not exps:
        raise ConfigError(f"no MLflow experiment in {store_uri}")
    exp = max(exps, key=lambda e: e.last_update_time or 0)
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=500)
    parents = [r for r in runs if r.data.tags.get("gluerl.stage") == "pipeline"
               or any(c.data.tags.get("mlflow.parentRunId") == r.info.run_id for c in runs)]
    pages = {"experiment": f"/#/experiments/{exp.experiment_id}/runs"}  # the training-runs table
    if parents:
        parent = parents[0]
        pages["parent_run"] = f"/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}"
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    else:
        children = runs
    if children:
        busiest = max(children, key=lambda r: len(r.data.metrics))
        pages["metrics"] = f"/#/experiments/{exp.experiment_id}/runs/{busiest.info.run_id}/model-metrics"
    return pages
