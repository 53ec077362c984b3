"""The workflow as a whole: same seed, same bytes; an interrupted run picks up where it stopped.

- Determinism: two clean runs of a tiny end-to-end config (download, prompts, model, few-shot
  evaluation, PPO training and its evaluation, table) with the same seed give byte-identical
  ``glue.csv`` and predictions; the same project with another seed gives different ones.
- Interruption: SIGINT to Snakemake's process group (Ctrl-C) while an evaluation job is
  generating; the rerun of the same target does not redo the evaluations that had finished,
  redoes the interrupted one, and no partial output was ever left where a complete one belongs
  (outputs are written to a temporary file and renamed).
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
from pathlib import Path

import pytest
from reliability_helpers import finished_counts, make_project, run_smk, start_smk, wait_for, write_config
from test_workflow import tiny_config

pytestmark = pytest.mark.slow

DETERMINISM = {
    "methods": ["fewshot", "ppo"],
    # sampled answers: the seed drives evaluation too (greedy answers of a tiny model hardly depend on the prompt)
    "evaluation": {"batch_size": 4, "max_new_tokens": 6, "do_sample": True},
    "ppo": {"steps": 2, "batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 1, "min_new_tokens": 6,
            "max_new_tokens": 7, "save_every": 1},
}


def outputs(work: Path) -> dict[str, bytes]:
    """glue.csv and every predictions file, by path."""
    files = [work / "results/tables/glue.csv", *sorted((work / "results/eval").rglob("*.predictions.jsonl"))]
    return {str(p.relative_to(work)): p.read_bytes() for p in files}


def test_same_seed_same_bytes_other_seed_other_results(tmp_path):
    runs = {}
    for name in ("a", "b"):
        work = make_project(tmp_path / name, DETERMINISM, pretrained=True)
        run_smk(work, "results/tables/glue.csv")
        runs[name] = outputs(work)
    a, b = runs["a"], runs["b"]
    assert sorted(a) == sorted(b) and len(a) == 3, sorted(a)  # glue.csv, fewshot and ppo predictions
    for path in a:
        assert a[path] == b[path], f"{path} differs between two runs with the same seed"

    # the same project, seed 2: other demonstrations and another PPO run
    work = tmp_path / "b" / "work"
    cfg = tiny_config(tmp_path / "b", tasks=["rte"], seeds=[2], training={"mode": "single"}, **DETERMINISM)
    write_config(work, cfg, "seed2.yaml")
    run_smk(work, "results/tables/glue.csv", config="config/seed2.yaml")
    c = outputs(work)
    for method in ("fewshot", "ppo"):
        p1 = f"results/eval/{method}/tiny/seed1/rte.predictions.jsonl"
        p2 = f"results/eval/{method}/tiny/seed2/rte.predictions.jsonl"
        assert c[p1] == a[p1]  # seed 1's files untouched
        assert c[p2] != a[p1], f"{method}: seed 2 gave the same predictions as seed 1"
    assert c["results/tables/glue.csv"] != a["results/tables/glue.csv"]
    print("glue.csv seed 1:\n" + a["results/tables/glue.csv"].decode() + "glue.csv seed 2:\n"
          + c["results/tables/glue.csv"].decode())


INTERRUPT = {
    "tasks": ["rte", "stsb"],
    "methods": ["zeroshot", "fewshot"],
    "evaluation": {"batch_size": 1, "max_new_tokens": 6},
}


def eval_files(work: Path) -> dict[str, int]:
    """Every evaluation output: path -> modification time (ns)."""
    return {str(p.relative_to(work)): p.stat().st_mtime_ns for p in (work / "results/eval").rglob("*") if p.is_file()}


def incomplete_outputs(work: Path) -> set[str]:
    """Outputs Snakemake marks incomplete (.snakemake/incomplete/<urlsafe base64 of the path, split
    at the name length limit with '@' before each part but the last>): their job had not finished."""
    root = work / ".snakemake" / "incomplete"
    out = set()
    for f in root.rglob("*") if root.is_dir() else []:
        if f.is_file() and f.name != "migration_underway":
            b64 = "".join(part.removeprefix("@") for part in f.relative_to(root).parts)
            out.add(base64.urlsafe_b64decode(b64).decode())
    return out


def test_sigint_during_evaluation_then_rerun(tmp_path):
    work = make_project(tmp_path, {**INTERRUPT,
                                   "data": {"source": "local", "local_dir": str(tmp_path / "glue"),
                                            "max_samples": {"train": 12, "eval": 24}}},
                        tasks=INTERRUPT["tasks"], n_train=12, n_eval=24)
    target = "results/tables/glue.csv"
    log = tmp_path / "interrupted.log"
    proc = start_smk(work, target, log=log)

    def second_eval_generating():
        # an evaluation Snakemake has finished (its outputs on disk are not enough: the job may not have exited)
        if not finished_counts([log]).get("evaluate_model"):
            return False
        for lg in (work / "logs/evaluate_model").rglob("*.log"):
            name = lg.relative_to(work / "logs/evaluate_model").with_suffix("")
            if not (work / "results/eval" / f"{name}.json").exists() and "validation]" in lg.read_text(errors="replace"):
                return True
        return False

    wait_for(second_eval_generating, proc, log, what="a second evaluation generating")
    before = eval_files(work)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: Snakemake and its running job both get it
    assert proc.wait(timeout=120) != 0
    after_int = eval_files(work)

    # what finished before the signal is still there, unchanged; the interrupted job left nothing behind
    results = sorted(p for p in after_int if p.endswith(".json") and not p.endswith("predictions.jsonl"))
    assert results, log.read_text()[-3000:]
    for p in before:
        assert after_int.get(p) == before[p], p
    assert not [p for p in after_int if Path(p).name.startswith(".")], after_int  # no temporary files
    for r in results:  # every result on disk is complete and has its predictions
        res = json.loads((work / r).read_text())
        preds = (work / r.replace(".json", ".predictions.jsonl")).read_text().splitlines()
        assert sum(c["n"] for c in res["columns"].values()) == len(preds) == 24
    total = 4
    assert len(results) < total, "every evaluation finished before the interruption"
    interrupted = [lg for lg in (work / "logs/evaluate_model").rglob("*.log")
                   if not (work / "results/eval" / lg.relative_to(work / "logs/evaluate_model")
                           .with_suffix(".json")).exists()]
    assert interrupted

    # a job that had written its outputs but not yet exited when the signal came is not finished for
    # Snakemake (its outputs stay marked incomplete) and is redone; every finished one is kept as it is
    unfinished = incomplete_outputs(work)
    finished = [r for r in results if r not in unfinished]
    assert finished, (results, unfinished)

    rerun = run_smk(work, target)
    out = rerun.stdout + rerun.stderr
    after = eval_files(work)
    for p in after_int:
        if p not in unfinished:
            assert after[p] == after_int[p], f"{p} was redone"
    assert len([p for p in after if p.endswith(".json") and not p.endswith("predictions.jsonl")]) == total
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    assert counts.get("evaluate_model") == str(total - len(finished)), out[-3000:]
    assert (work / target).is_file()
    print(f"interrupted after {len(results)} of {total} evaluations; rerun ran {counts['evaluate_model']}")
