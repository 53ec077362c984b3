"""Time ``snakemake -n`` planning the paper-scale grid: 3 models x every task x 6 methods x 3 seeds.

    python benchmarks/plan_grid.py --repeats 3

The grid's config is built from the paper configs (``config/paper/*.yaml``: their models, the
first one's settings), with every task of the registry (the shipped task files: GLUE, and
SuperGLUE once its task file is there), every method and seeds 1..3. It is written to a
temporary folder and planned from the repository root exactly as a user would:

    snakemake -n --configfile <grid.yaml> --replace-workflow-config

Each repeat is a fresh process (imports, Snakefile parse, DAG); the table shows the jobs planned,
the median wall-clock seconds, the child's CPU seconds (user+sys, less sensitive to the shared
machine's load), and PASS/FAIL against the target.

Where SLURM's ``scontrol`` is installed, snakemake-executor-plugin-slurm runs ``scontrol show
config`` when snakemake starts (every command, ``-n`` included); with no controller reachable it
waits for scontrol's timeout. The second row runs with ``SLURM_CONF`` pointing at an empty file,
so that probe fails at once (as on a machine without SLURM, and close to one with a live
controller): the difference is the probe's cost, not the workflow's.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
METHODS = ["zeroshot", "fewshot", "sft", "ppo", "sft_ppo", "grpo"]


def grid_config(paper_dir: Path, seeds: int) -> dict:
    """The paper configs' models and first config's settings, every registry task, every method."""
    from gluerl.tasks import registry

    files = sorted(paper_dir.glob("*.yaml"))
    if not files:
        raise SystemExit(f"no paper configs (*.yaml) in {paper_dir}")
    models: dict = {}
    for f in files:
        doc = yaml.safe_load(f.read_text()) or {}
        if not isinstance(doc.get("models"), dict):
            raise SystemExit(f"{f}: no 'models' mapping")
        models.update(doc["models"])
    cfg = yaml.safe_load(files[0].read_text())
    cfg.update(tasks=sorted(registry()), methods=list(METHODS), seeds=list(range(1, seeds + 1)), models=models)
    return cfg


def plan(config: Path, env: dict) -> tuple[float, float, int, str]:
    """(wall seconds, child CPU seconds, jobs planned, output) of one ``snakemake -n``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(config),
                           "--replace-workflow-config"], cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"snakemake -n failed (exit {proc.returncode}):\n{out[-3000:]}")
    m = re.search(r"^total\s+(\d+)\s*$", out, re.M)
    if not m:
        raise SystemExit(f"no job count ('total N') in snakemake's output:\n{out[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, int(m.group(1)), out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="fresh snakemake processes per variant (median shown)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 1..N")
    p.add_argument("--paper-dir", type=Path, default=REPO / "config" / "paper", help="paper configs (models)")
    p.add_argument("--target", type=float, default=10.0, help="seconds")
    p.add_argument("--keep", type=Path, help="also write the grid config here")
    args = p.parse_args(argv)

    cfg = grid_config(args.paper_dir, args.seeds)
    work = Path(tempfile.mkdtemp(prefix="gluerl-plan-grid-"))
    try:
        grid = work / "grid.yaml"
        grid.write_text(yaml.safe_dump(cfg, sort_keys=False))
        if args.keep:
            shutil.copy(grid, args.keep)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
        variants = [("as installed", env)]
        if shutil.which("scontrol"):
            empty = work / "slurm-empty.conf"
            empty.write_text("")
            variants.append(("SLURM probe fails at once", {**env, "SLURM_CONF": str(empty)}))
        print(f"grid: {len(cfg['models'])} models ({', '.join(cfg['models'])}), {len(cfg['tasks'])} tasks "
              f"({', '.join(cfg['tasks'])}), {len(cfg['methods'])} methods, seeds {cfg['seeds']}", flush=True)
        runs: dict[str, list] = {name: [] for name, _ in variants}
        loads = [os.getloadavg()[0]]
        for r in range(args.repeats):
            order = variants if r % 2 == 0 else variants[::-1]  # alternate, so load drifts hit both
            for name, e in order:
                wall, cpu, jobs, _ = plan(grid, e)
                runs[name].append((wall, cpu, jobs))
                print(f"  repeat {r + 1} {name}: {jobs} jobs, {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
            loads.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nsnakemake -n, paper-scale grid; median of {args.repeats}; "
          f"1-min load average {min(loads):.2f}-{max(loads):.2f} on {os.cpu_count()} CPUs")
    print("| variant | jobs planned | wall s (median) | wall s (min) | CPU s (median) | target s | result |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in runs.items():
        wall = statistics.median(w for w, _, _ in rows)
        cpu = statistics.median(c for _, c, _ in rows)
        jobs = {j for _, _, j in rows}
        print(f"| {name} | {'/'.join(map(str, sorted(jobs)))} | {wall:.2f} | {min(w for w, _, _ in rows):.2f} | "
              f"{cpu:.2f} | {args.target:g} | {'PASS' if wall < args.target else 'FAIL'} |")


if __name__ == "__main__":
    main()
