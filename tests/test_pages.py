"""The pages a run leaves, checked in a real browser where one is installed (headless Chromium):
DVC's plots drawn offline from the page our template makes (DVC's own page, which loads Vega from
a CDN, stays blank offline), and the MLflow UI's parent run, nested runs and grouped metric charts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gluerl.dvcplots import remote_scripts, show
from gluerl.screenshots import blank, browser, file_url, mlflow_pages, mlflow_ui, screenshot

REPO = Path(__file__).resolve().parents[1]
needs_browser = pytest.mark.skipif(browser() is None, reason="no Chromium (apt-get install chromium)")


@pytest.fixture
def dvc_project(tmp_path, monkeypatch):
    """A DVC project with one training-curve CSV and the repository's runs template."""
    if shutil.which("dvc") is None and not (Path(sys.executable).parent / "dvc").exists():
        pytest.skip("no dvc executable")
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    for var, sub in (("DVC_SITE_CACHE_DIR", "site"), ("DVC_GLOBAL_CONFIG_DIR", "global"),
                     ("DVC_SYSTEM_CONFIG_DIR", "system")):
        monkeypatch.setenv(var, str(tmp_path / "dvc-home" / sub))
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    work = tmp_path / "repo"
    work.mkdir()
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=work, check=True)
    (work / ".dvc/plots").mkdir()
    shutil.copy(REPO / ".dvc/plots/runs.json", work / ".dvc/plots/runs.json")
    (work / "ppo.csv").write_text("run,step,reward_mean\na,1,0.1\na,2,0.4\na,3,0.5\nb,1,0.2\nb,2,0.3\nb,3,0.6\n")
    (work / "dvc.yaml").write_text("plots:\n  - training_reward:\n      template: runs\n      x: step\n"
                                   "      y:\n        ppo.csv: reward_mean\n")
    return work


def test_offline_page_loads_nothing_from_elsewhere(dvc_project):
    index = show("plots", dvc_project / ".dvc/tmp/offline.html", cwd=dvc_project)
    html = index.read_text()
    assert not remote_scripts(html)
    assert "vegaEmbed('#training_reward'" in html and '"reward_mean": "0.6"' in html
    for lib in ("vega/vega.js", "vega-lite/vega-lite.js", "vega-embed/vega-embed.js"):
        assert f"<!-- {lib} " in html  # inlined, with its licence
    # DVC's own page: the three CDN scripts our check looks for
    subprocess.run(["dvc", "plots", "show", "-o", "cdn", "-q"], cwd=dvc_project, check=True)
    assert len(remote_scripts((dvc_project / "cdn/index.html").read_text())) == 3


@needs_browser
def test_offline_page_draws_in_a_browser_without_network(dvc_project, tmp_path):
    index = show("plots", dvc_project / ".dvc/tmp/offline.html", cwd=dvc_project)
    subprocess.run(["dvc", "plots", "show", "-o", "cdn", "-q"], cwd=dvc_project, check=True)
    drawn = screenshot(file_url(index), tmp_path / "offline.png", 700, 400, 5000)
    cdn = screenshot(file_url(dvc_project / "cdn/index.html"), tmp_path / "cdn.png", 700, 400, 5000)
    assert not blank(drawn) and blank(cdn)


@needs_browser
@pytest.mark.slow
def test_mlflow_ui_shows_the_parent_run_and_grouped_charts(tmp_path, monkeypatch):
    from gluerl import tracking

    monkeypatch.delenv("GLUERL_PARENT_RUN_ID", raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    cfg = {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "pages"}
    parent = tracking.start_pipeline_run(cfg, params={"tasks": "rte"})
    with tracking.start_run(cfg, "ppo-tiny-rte-seed1", "ppo", {"ppo.steps": 3}) as run:
        for step in (1, 2, 3):
            run.log_metrics({"reward_mean": 0.1 * step, "kl": 0.01 * step, "policy_loss": 1 / step,
                             "value_loss": 2 / step}, step=step)
    tracking.end_pipeline_run()
    pages = mlflow_pages(cfg["tracking_uri"])
    assert pages["parent_run"].endswith(parent) and pages["metrics"].endswith(f"{run.run_id}/model-metrics")
    with mlflow_ui(cfg["tracking_uri"]) as url:
        shots = {name: screenshot(url + path, tmp_path / f"{name}.png", 1400, 900, 10000)
                 for name, path in pages.items()}
    assert not [name for name, png in shots.items() if blank(png)]
