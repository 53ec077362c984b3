"""The real Snakemake DAG, end to end, on a tiny random model and generated data (CPU, offline)."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gluerl.testing import make_test_resources

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = ["Snakefile", "rules", "scripts", "profiles", "config", "envs", "report", ".test"]


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    return dest


def snakemake(workdir: Path, *args, check=True, timeout=900):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


METHODS = ["zeroshot", "fewshot", "sft", "ppo", "sft_ppo", "grpo"]


def tiny_config(root: Path, **over) -> dict:
    """.test/config.yaml (the checked-in test configuration) on the tiny model and data under ``root``."""
    cfg = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    cfg["models"]["tiny"]["path"] = str(root / "tiny-src")
    cfg["data"]["local_dir"] = str(root / "glue")
    cfg.update(over)
    return cfg


def test_the_checked_in_test_config_plans_the_whole_dag(tmp_path):
    """.test/config.yaml as its header says to run it: `python -m gluerl.testing .test/resources`, then
    Snakemake plans every stage from the data to the table (tests below run it)."""
    work = copy_workflow(tmp_path / "work")
    shutil.rmtree(work / ".test" / "resources", ignore_errors=True)
    proc = subprocess.run([sys.executable, "-m", "gluerl.testing", ".test/resources"], cwd=work, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (work / ".test/resources/tiny-model/config.json").is_file()
    assert (work / ".test/resources/glue/rte/train.jsonl").is_file()
    plan = snakemake(work, "-n", "--configfile", ".test/config.yaml", "--replace-workflow-config", "--quiet", "rules")
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", plan.stdout, flags=re.M))
    # 3 tasks x 2 templates x 2 seeds of prompts, 4 training methods x 2 seeds, 6 methods x 3 tasks x 2 seeds
    assert counts["train_sft_ppo"] == "2" and counts["evaluate_model"] == "36" and counts["assemble_table"] == "1", counts


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("wf")
    make_test_resources(root, model="tiny-src")  # the resources of .test/config.yaml, where tiny_config says
    work = copy_workflow(root / "work")
    (work / "config" / "test.yaml").write_text(yaml.safe_dump(tiny_config(root)))
    return root, work


def run_args(*extra):
    return ["--configfile", "config/test.yaml", "--replace-workflow-config", *extra]


@pytest.mark.slow
def test_dag_end_to_end_to_glue_csv(project):
    root, work = project
    snakemake(work, *run_args())
    table = work / "results" / "tables" / "glue.csv"
    rows = list(csv.DictReader(table.open()))
    assert [r["method"] for r in rows] == METHODS
    cols = ["rte", "stsb", "mnli_m", "mnli_mm"]
    diffs = [c + s for c in [*cols, "average"] for s in ("_diff", "_diff_lo", "_diff_hi", "_diff_p")]
    assert list(rows[0]) == ["method", "model", "seeds", *[c + s for c in cols for s in ("", "_lo", "_hi")], "average",
                             *diffs]  # differences to the reference method (tables.reference_method: sft)
    sft = rows[METHODS.index("sft")]
    for r in rows:
        assert r["model"] == "tiny" and r["seeds"] == "2"
        for c in [*cols, "average"]:  # paired differences to sft, from the unrounded scores
            if r["method"] == "sft":
                assert r[c + "_diff"] == "", c
            else:
                assert float(r[c + "_diff"]) == pytest.approx(float(r[c]) - float(sft[c]), abs=0.151), (r["method"], c)
                assert float(r[c + "_diff_lo"]) <= float(r[c + "_diff_hi"]), (r["method"], c)
                assert 0 < float(r[c + "_diff_p"]) <= 1
        vals = [float(r[c]) for c in cols]
        assert float(r["average"]) == pytest.approx(sum(vals) / 4, abs=0.051)
        for c in cols:  # bootstrap interval of every score (bounds and score are each means over seeds)
            assert float(r[c + "_lo"]) <= float(r[c + "_hi"]), (r["method"], c)
    # each score in the table is the mean over seeds of the evaluation files' scores
    res = [json.loads((work / f"results/eval/zeroshot/tiny/seed{s}/rte.json").read_text()) for s in (1, 2)]
    assert float(rows[0]["rte"]) == round(100 * sum(r["columns"]["rte"]["score"] for r in res) / 2, 1)
    for r in res:
        lo, hi = r["columns"]["rte"]["ci"]["score"]
        assert lo <= r["columns"]["rte"]["score"] <= hi and r["columns"]["rte"]["bootstrap"]["resamples"] == 1000
    assert float(rows[0]["rte_lo"]) == round(100 * sum(r["columns"]["rte"]["ci"]["score"][0] for r in res) / 2, 1)
    assert (work / "results/tables/glue.md").read_text().startswith("# GLUE")
    assert "## Difference to sft" in (work / "results/tables/glue.md").read_text()
    assert (work / "results/tables/glue.png").read_bytes()[:4] == b"\x89PNG"
    preds = (work / "results/eval/fewshot/tiny/seed1/mnli.predictions.jsonl").read_text().splitlines()
    assert len(preds) == 12 and {json.loads(p)["split"] for p in preds} == {"validation_matched", "validation_mismatched"}
    fewshot_prompt = json.loads((work / "data/prompts/2shot-seed1/rte/validation.jsonl").read_text().splitlines()[0])
    assert len(fewshot_prompt["messages"]) == 5  # two demonstrations (user+assistant) and the question
    for rule in ("download_dataset", "format_prompts", "prepare_model", "evaluate_model", "assemble_table"):
        assert any((work / "logs" / rule).rglob("*.log")), rule
    assert any((work / "results" / "benchmarks" / "evaluate_model").rglob("*.tsv"))
    # training: one adapter per method and seed on all tasks mixed; evaluation applied it
    for method in ("sft", "ppo", "sft_ppo", "grpo"):
        for seed in (1, 2):
            ckpt = work / f"results/checkpoints/{method}/tiny/multi/seed{seed}"
            assert (ckpt / "adapter_model.safetensors").is_file() and (ckpt / "metrics.jsonl").is_file()
            res = json.loads((work / f"results/eval/{method}/tiny/seed{seed}/rte.json").read_text())
            assert res["adapter"] == str(Path("results/checkpoints") / method / "tiny" / "multi" / f"seed{seed}")
    ppo_lines = (work / "results/checkpoints/sft_ppo/tiny/multi/seed1/metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in ppo_lines] == [1, 2]
    # a CSV per setup (the report's figures) and one per method, every run in it (dvc.yaml's plots)
    assert sorted(p.name for p in (work / "results/plots/training").glob("*.csv")) == sorted(
        [f"{m}-tiny-multi-seed{s}.csv" for m in ("sft", "ppo", "sft_ppo", "grpo") for s in (1, 2)]
        + [f"{m}.csv" for m in ("sft", "ppo", "sft_ppo", "grpo")])
    assert (work / "results/plots/training_curves.png").read_bytes()[:4] == b"\x89PNG"

    # a second run has nothing to do
    again = snakemake(work, *run_args("-n"))
    assert "Nothing to be done" in again.stdout + again.stderr


def check_report(work: Path, args: list[str], setups: list[str]) -> str:
    """``snakemake --report`` of a finished run: every table, chart and training figure is in it with
    its caption rendered from the run's config; returns the HTML."""
    proc = snakemake(work, *args, "--report", "report.html", timeout=300)
    log = proc.stdout + proc.stderr
    for name in ("glue.csv", "glue.png", "training_curves.png", *(f"{s}.png" for s in setups)):
        assert f"Adding {name} (" in log, (name, log[-3000:])
    html = (work / "report.html").read_text()
    cfg = yaml.safe_load((work / "config" / "test.yaml").read_text())
    assert f"tasks: {', '.join(cfg['tasks'])}" in html  # report/workflow.rst with this run's config
    assert "GLUE table: a row per method and model" in html  # report/table.rst
    assert "GLUE table as bars" in html and "Training diagnostics of every setup" in html
    return html


@pytest.mark.slow
def test_report_of_the_finished_run(project):
    root, work = project
    snakemake(work, *run_args())  # nothing to do after test_dag_end_to_end_to_glue_csv
    check_report(work, run_args(), [f"{m}-tiny-multi" for m in ("sft", "ppo", "sft_ppo", "grpo")])


@pytest.mark.slow
def test_bad_row_fails_naming_file_and_line_and_keeps_results(project):
    root, work = project
    table = work / "results/tables/glue.csv"
    if not table.exists():
        pytest.skip("needs the end-to-end run first")
    before = table.read_text()
    bad_dir = root / "glue-bad"
    shutil.copytree(root / "glue", bad_dir)
    lines = (bad_dir / "rte" / "validation.jsonl").read_text().splitlines()
    row = json.loads(lines[2])
    del row["sentence2"]
    lines[2] = json.dumps(row)
    (bad_dir / "rte" / "validation.jsonl").write_text("\n".join(lines) + "\n")
    cfg = tiny_config(root, data={"source": "local", "local_dir": str(bad_dir), "max_samples": {"train": 24, "eval": 6}})
    (work / "config" / "bad.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(work, "--configfile", "config/bad.yaml", "--replace-workflow-config", check=False)
    assert proc.returncode != 0
    log = (work / "logs/download_dataset/rte/validation.log").read_text()
    assert f"{bad_dir}/rte/validation.jsonl, line 3: row has no text field 'sentence2'" in log
    assert not (work / "data/raw/rte/validation.jsonl").exists()  # no half-written output
    assert table.read_text() == before  # earlier results stay
    assert (work / "results/eval/zeroshot/tiny/seed1/stsb.json").exists()


@pytest.mark.parametrize("change,msg", [
    ({"tasks": ["rte", "nope"]}, "unknown task(s) ['nope']"),
    ({"methods": ["zeroshot", "magic"]}, "methods"),
    ({"models": {"m": {"path": "/does/not/exist"}}}, "models.m.path: folder /does/not/exist does not exist"),
    ({"data": {"source": "local", "local_dir": "/no/such/dir"}}, "data.local_dir: folder /no/such/dir does not exist"),
    ({"evaluation": {"batch_size": "big"}}, "evaluation.batch_size: 'big' is not of type 'integer'"),
])
def test_bad_config_fails_before_any_job(project, tmp_path, change, msg):
    root, work = project
    cfg = tiny_config(root)
    cfg.update(change)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(work, "-n", "--configfile", str(tmp_path / "c.yaml"), "--replace-workflow-config", check=False)
    assert proc.returncode != 0
    assert msg in proc.stdout + proc.stderr


def test_lint_is_clean():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Congratulations, your workflow is in a good condition!" in out, out


def test_full_grid_plans(tmp_path):
    """All GLUE tasks, every method, two seeds: the plan lists every evaluation and training run."""
    cfg = {"tasks": ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "ax"],
           "methods": METHODS, "seeds": [1, 2],
           "models": {"m": {"hub": "org/model"}}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(cfg))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(tmp_path / "grid.yaml"),
                           "--replace-workflow-config", "--quiet", "rules"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    # 9 labelled tasks x 6 methods x 2 seeds evaluations (ax has no public labels: not in the table);
    # single-task training: an adapter per trainable task (ax uses MNLI's) and seed
    assert counts["evaluate_model"] == str(9 * 6 * 2), out
    for rule in ("train_sft", "train_ppo", "train_sft_ppo", "train_grpo"):
        assert counts[rule] == str(9 * 2), (rule, out)
    print(f"planned in {time.perf_counter() - t0:.1f}s")


def plan_counts(tmp_path, cfg) -> tuple[dict, str]:
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(tmp_path / "grid.yaml"),
                           "--replace-workflow-config", "--quiet", "rules"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    return dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M)), out


SUPERGLUE = ["boolq", "cb", "copa", "multirc", "record", "superglue_rte", "wic", "wsc", "axb", "axg"]


def test_superglue_full_grid_plans_superglue_csv(tmp_path):
    """All SuperGLUE tasks, every method, two seeds: superglue.csv from 8 labelled tasks' evaluations."""
    counts, out = plan_counts(tmp_path, {"tasks": SUPERGLUE, "methods": METHODS, "seeds": [1, 2],
                                         "models": {"m": {"hub": "org/model"}}})
    assert counts["evaluate_model"] == str(8 * 6 * 2), out  # axb/axg: no labels, not in the table
    for rule in ("train_sft", "train_ppo", "train_sft_ppo", "train_grpo"):
        assert counts[rule] == str(8 * 2), (rule, out)
    assert counts["assemble_table"] == "1", out
    # GLUE and SuperGLUE together: both tables; GLUE's rte and SuperGLUE's rte are separate tasks
    counts, out = plan_counts(tmp_path, {"tasks": ["rte", "cola", "superglue_rte", "boolq"], "methods": ["zeroshot"],
                                         "seeds": [1], "models": {"m": {"hub": "org/model"}}})
    assert counts["assemble_table"] == "2" and counts["evaluate_model"] == "4", out
    assert counts["download_dataset"] == "4", out  # validation splits of rte, cola, superglue_rte, boolq
