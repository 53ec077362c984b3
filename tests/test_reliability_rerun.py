"""A failed rerun never leaves the user worse off: the last good outputs of a job come back (issue 15).

The issue's case: an evaluation redone with ``evaluation.context_overflow: error`` fails, and
Snakemake deletes the earlier good ``rte.json`` and its predictions. Going back to the settings
that worked must cost nothing: the job's last good outputs (kept by ``gluerl.job``) are restored,
byte for byte, and so is the table.
"""

from __future__ import annotations

import pytest
import yaml
from reliability_helpers import make_project, run_smk, write_config

pytestmark = pytest.mark.slow


def test_a_failed_reevaluation_loses_nothing(tmp_path):
    work = make_project(tmp_path, {"methods": ["zeroshot"], "tables": {"reference_method": None}})
    run_smk(work, "results/tables/glue.csv")
    files = ["results/eval/zeroshot/tiny/seed1/rte.json", "results/eval/zeroshot/tiny/seed1/rte.predictions.jsonl",
             "results/tables/glue.csv", "results/tables/glue.md"]
    good = {f: (work / f).read_bytes() for f in files}

    cfg = yaml.safe_load((work / "config" / "test.yaml").read_text())
    cfg["evaluation"] = {**cfg["evaluation"], "context_overflow": "error", "max_prompt_tokens": 8}
    write_config(work, cfg, "strict.yaml")
    failed = run_smk(work, "results/tables/glue.csv", check=False, config="config/strict.yaml")
    log = work / "logs/evaluate_model/zeroshot/tiny/seed1/rte.log"
    assert failed.returncode != 0 and "context_overflow" in log.read_text(), log.read_text()[-2000:]
    assert not (work / files[0]).exists()  # Snakemake removes a failed job's outputs

    back = run_smk(work, "results/tables/glue.csv")
    assert "restored from the last good run" in log.read_text(), log.read_text()[-2000:]
    assert "evaluate_model" in back.stdout + back.stderr  # the job ran (Snakemake's view), in a moment
    assert {f: (work / f).read_bytes() for f in files} == good
    # and Snakemake agrees everything is up to date for these settings
    dry = run_smk(work, "results/tables/glue.csv", "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
