"""Headless Chromium screenshots of the Snakemake report, the MLflow UI and the offline DVC plots.

    snakemake --cores 2 --report report.html
    python scripts/dvc_plots.py --out dvc_plots
    python scripts/screenshots.py --out results/screenshots --report report.html \
        --mlflow sqlite:///results/mlflow.db --dvc-plots dvc_plots/index.html

Writes ``report.png``, ``mlflow-experiment.png`` (the latest parent run with its nested runs),
``mlflow-parent-run.png``, ``mlflow-metrics.png`` (the grouped charts of the run with the most
metrics) and ``dvc-plots.png``, each page loaded with no network beyond 127.0.0.1; exits 1 if a
screenshot is blank (a page that needs the internet, or failed to draw). Needs Chromium
(``apt-get install chromium``; see ``gluerl.screenshots``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from gluerl import cli
from gluerl.errors import DataError
from gluerl.screenshots import blank, file_url, mlflow_pages, mlflow_ui, screenshot

log = logging.getLogger("gluerl.screenshots")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the PNG files")
    p.add_argument("--report", help="the HTML of snakemake --report")
    p.add_argument("--mlflow", metavar="URI", help="MLflow store to browse (e.g. sqlite:///results/mlflow.db)")
    p.add_argument("--experiment", help="MLflow experiment (default: the one updated last)")
    p.add_argument("--dvc-plots", metavar="HTML", help="a dvc plots page (scripts/dvc_plots.py writes one)")
    p.add_argument("--wait-ms", type=int, default=10000, help="time each page gets to draw (default 10000)")
    args = p.parse_args(argv)
    out = Path(args.out)
    shots = []
    if args.report:
        shots.append(screenshot(file_url(args.report), out / "report.png", wait_ms=args.wait_ms))
    if args.dvc_plots:
        shots.append(screenshot(file_url(args.dvc_plots), out / "dvc-plots.png", 1200, 1600, args.wait_ms))
    if args.mlflow:
        pages = mlflow_pages(args.mlflow, args.experiment)
        with mlflow_ui(args.mlflow) as url:
            for name, path in pages.items():
                shots.append(screenshot(url + path, out / f"mlflow-{name.replace('_', '-')}.png", 1600, 1000,
                                        args.wait_ms))
    empty = [s for s in shots if blank(s)]
    for s in shots:
        print(f"{s}{'  (blank)' if s in empty else ''}")
    if empty:
        raise DataError(f"blank screenshots: {', '.join(map(str, empty))}")


if __name__ == "__main__":
    cli.run(main)
