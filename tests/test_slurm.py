"""The real DAG through SLURM: `snakemake --profile profiles/slurm` on a one-node cluster on this machine.

.ci/slurm-setup.sh installs (Debian packages) and starts munge, MariaDB, slurmdbd, slurmctld and
slurmd; the workflow then runs on a tiny random model and generated data, every job submitted with
sbatch by snakemake-executor-plugin-slurm, and each submitted job must be COMPLETED in sacct.
Skipped only where the cluster cannot be installed (no root, no package repository). The daemons
stay up afterwards (a later run reuses them).
"""

import csv
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gluerl.testing import fixture_texts, make_glue_fixture, make_tiny_model
from slurm_cluster import ACCOUNT, PARTITION, Unavailable, local_overlay, sacct, setup_cluster

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = ["Snakefile", "rules", "scripts", "profiles", "config", "envs"]
# download (train, validation), prompts (0-shot, 2-shot), model, 2 evaluations, table
EXPECTED_JOBS = {"download_dataset": 2, "format_prompts": 2, "prepare_model": 1, "evaluate_model": 2,
                 "assemble_table": 1}
GPU_RULES = {"evaluate_model", "train_sft", "train_ppo", "train_sft_ppo", "train_grpo"}


@pytest.fixture(scope="module")
def cluster():
    t0 = time.perf_counter()
    try:
        out = setup_cluster()
    except Unavailable as e:
        pytest.skip(f"no SLURM cluster: {e}")
    print(out.strip().splitlines()[-1], f"({time.perf_counter() - t0:.0f}s)")
    return out


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """Run the tiny DAG through the SLURM profile once; returns (workdir, snakemake output, seconds)."""
    root = tmp_path_factory.mktemp("slurm")  # on this machine's disk, which slurmd (same machine) sees
    make_tiny_model(root / "tiny-src", fixture_texts())
    make_glue_fixture(root / "glue", ["rte"], n_train=30, n_eval=8)
    work = root / "work"
    work.mkdir()
    for name in WORKFLOW:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    cfg = {
        "tasks": ["rte"],
        "methods": ["zeroshot", "fewshot"],
        "seeds": [1],
        "models": {"tiny": {"path": str(root / "tiny-src")}},
        "data": {"source": "local", "local_dir": str(root / "glue"), "max_samples": {"train": 24, "eval": 6}},
        "prompting": {"num_shots": 2},
        "evaluation": {"batch_size": 4, "max_new_tokens": 6},
        "mlflow": {"enabled": False},
    }
    # The experiment is the copy's config/config.yaml itself: Snakemake 9 does not forward
    # --replace-workflow-config to cluster jobs, so `--configfile X --replace-workflow-config` would
    # give the jobs config/config.yaml merged with X (other models and tasks) instead of X alone.
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    # the cluster profile's per-rule resources, sized for this small node (2 CPUs, no real GPU)
    overlay = work / "profiles" / "slurm-local"
    overlay.mkdir()
    (overlay / "config.yaml").write_text(yaml.safe_dump(local_overlay(work / "profiles" / "slurm" / "config.yaml")))

    env = dict(os.environ, SLURM_ACCOUNT=ACCOUNT, SLURM_PARTITION=PARTITION, HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1", MLFLOW_TRACKING_URI="",
               # jobs run `python -m snakemake`: the same interpreter as this one, found first on PATH
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "--profile", "profiles/slurm-local",
           "--slurm-keep-successful-logs",                    # keep each job's SLURM log for the checks
           "--slurm-init-seconds-before-status-checks", "3",  # poll often: the jobs take seconds
           "--verbose"]                                       # log each sbatch call
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    (root / "snakemake.log").write_text(out)
    assert proc.returncode == 0, f"snakemake --profile profiles/slurm failed ({proc.returncode}):\n{out[-8000:]}"
    return work, out, seconds


def submitted(out: str) -> dict[str, str]:
    """SLURM job id -> snakemake job id, from the plugin's 'has been submitted' lines."""
    return {m[1]: m[0] for m in re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", out)}


def test_profile_declares_gpu_rules_and_growing_memory():
    cfg = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert cfg["executor"] == "slurm" and cfg["retries"] >= 1
    defaults = cfg["default-resources"]
    assert {"slurm_account", "slurm_partition", "runtime", "mem_mb", "cpus_per_task"} <= set(defaults)
    assert "attempt" in defaults["mem_mb"]
    assert set(cfg["set-resources"]) >= GPU_RULES
    for rule in GPU_RULES:
        res = cfg["set-resources"][rule]
        assert res["gpu"] >= 1 and res["cpus_per_gpu"] >= 1 and "attempt" in res["mem_mb"], rule
        assert res["runtime"] > defaults["runtime"], rule
    # the rules themselves still ask for their GPU
    for smk in ("evaluate.smk", "train.smk"):
        assert "gpu=1" in (REPO / "rules" / smk).read_text().replace(" ", "")


@pytest.mark.slow
def test_dag_through_slurm_to_glue_csv(slurm_run):
    work, out, seconds = slurm_run
    rows = list(csv.DictReader((work / "results" / "tables" / "glue.csv").open()))
    assert [r["method"] for r in rows] == ["zeroshot", "fewshot"]
    assert list(rows[0]) == ["method", "model", "seeds", "rte", "rte_lo", "rte_hi", "average"]
    assert all(r["model"] == "tiny" and r["seeds"] == "1" for r in rows)
    print(f"workflow through SLURM: {seconds:.0f}s")


@pytest.mark.slow
def test_every_job_went_through_sbatch(slurm_run):
    work, out, _ = slurm_run
    jobs = submitted(out)
    assert len(jobs) == sum(EXPECTED_JOBS.values()), out[-6000:]
    # the plugin's per-job logs: .snakemake/slurm_logs/rule_<rule>/<wildcards>/<slurm id>.log
    logs = {p.stem: p for p in (work / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert set(jobs) <= set(logs), (sorted(jobs), sorted(logs))
    per_rule = {}
    for jid in jobs:
        rule = next(part[len("rule_"):] for part in logs[jid].relative_to(work).parts if part.startswith("rule_"))
        per_rule[rule] = per_rule.get(rule, 0) + 1
    assert per_rule == EXPECTED_JOBS
    # sbatch carried the profile's account and partition, and GPU jobs their GPU and CPUs per GPU
    calls = [line for line in out.splitlines() if "sbatch call:" in line]
    assert len(calls) == len(jobs)
    for call in calls:
        assert f"-A {ACCOUNT}" in call and f"-p {PARTITION}" in call, call
        if "rule_evaluate_model" in call:
            assert "--gpus=1" in call and "--cpus-per-gpu=1" in call and "--cpus-per-task" not in call, call
        else:
            assert "--gpus" not in call and "--cpus-per-task=" in call, call


@pytest.mark.slow
def test_sacct_shows_every_job_completed(slurm_run):
    work, out, _ = slurm_run
    jobs = submitted(out)
    records = sacct(sorted(jobs, key=int))
    for jid in sorted(jobs, key=int):
        rec = records.get(jid)
        print("sacct:", "|".join(rec.values()) if rec else f"{jid} missing")
    assert set(records) == set(jobs)
    for jid, rec in records.items():
        assert rec["State"] == "COMPLETED" and rec["ExitCode"] == "0:0", rec
        assert rec["Account"] == ACCOUNT and rec["Partition"] == PARTITION, rec
    # evaluation jobs held the (placeholder) GPU the profile asks for, at attempt 1's memory
    logs = {p.stem: p for p in (work / ".snakemake" / "slurm_logs").rglob("*.log")}
    evals = [j for j in jobs if "rule_evaluate_model" in logs[j].parts]
    assert len(evals) == 2
    for jid in evals:
        assert "gres/gpu=1" in records[jid]["AllocTRES"] and records[jid]["ReqMem"].startswith("2000M"), records[jid]
