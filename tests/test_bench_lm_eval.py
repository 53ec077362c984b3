"""benchmarks/eval_vs_lm_eval.py's task export: the YAML and JSON files it gives lm-eval.

The export runs without lm_eval; the test that lm-eval loads the exported tasks (our prompt text
as the context, our stop string and token budget; its built-in GLUE task on local files) is
skipped when lm_eval is not importable.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from gluerl.prompts import format_split, render_prompt
from gluerl.tasks import get_task

REPO = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("eval_vs_lm_eval", REPO / "benchmarks" / "eval_vs_lm_eval.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ROWS = [
    {"sentence1": "A cat sat on the mat.", "sentence2": "A cat sat.", "label": 0, "idx": 0},
    {"sentence1": "It rained all day.", "sentence2": "It was dry.", "label": 1, "idx": 1},
    {"sentence1": "Paris is in France.", "sentence2": "Paris is a city.", "label": 0, "idx": 2},
]


def export(tmp_path, bench, shots_demos=()):
    task = get_task("rte")
    records = format_split(ROWS, task, shots_demos)
    prompts = [render_prompt(r["messages"], None, "never") for r in records]
    cfg = bench.generate_task_config("gluerl_gen_rte_test", tmp_path / "data" / "gen.jsonl", 8)
    path = bench.write_task(tmp_path / "tasks", cfg, bench.generate_docs(ROWS, records, prompts, task))
    return task, prompts, cfg, path


def test_generate_task_export(tmp_path):
    bench = load_bench()
    task, prompts, cfg, path = export(tmp_path, bench)
    written = yaml.safe_load(path.read_text())
    assert written == cfg
    assert written["output_type"] == "generate_until"
    assert written["generation_kwargs"] == {"until": ["</Judgement>"], "max_gen_toks": 8, "do_sample": False}
    assert written["doc_to_text"] == "prompt" and written["num_fewshot"] == 0
    docs = [json.loads(line) for line in (tmp_path / "data" / "gen.jsonl").read_text().splitlines()]
    assert [d["prompt"] for d in docs] == prompts
    assert all(p.endswith("<Judgement>") for p in prompts)
    assert [d["target"] for d in docs] == ["entailment", "not_entailment", "entailment"]
    assert [d["label"] for d in docs] == [0, 1, 0] and docs[1]["sentence2"] == "It was dry."


def test_choice_task_export(tmp_path):
    bench = load_bench()
    val, train = tmp_path / "v.jsonl", tmp_path / "t.jsonl"
    zero = bench.choice_task_config("gluerl_mc_rte_0", Path("/x/rte/default.yaml"), val, None, 0)
    assert zero["include"] == "/x/rte/default.yaml" and zero["training_split"] is None
    assert zero["dataset_path"] == "json" and zero["dataset_kwargs"] == {"data_files": {"validation": str(val)}}
    five = bench.choice_task_config("gluerl_mc_rte_5", Path("/x/rte/default.yaml"), val, train, 5)
    assert five["num_fewshot"] == 5 and "training_split" not in five  # the built-in task's own "train"
    assert five["dataset_kwargs"]["data_files"] == {"validation": str(val), "train": str(train)}


def test_bands_cover_every_row_once():
    bench = load_bench()
    lengths = [5, 9, 1, 7, 3, 8, 2]
    parts = bench.bands(len(lengths), lengths, 3)
    assert sorted(i for p in parts for i in p) == list(range(7))
    assert parts[0] == [1, 3, 5]  # the longest band first, each in the split's order
    assert bench.parse_limits(["sst2=10", "rte=all"], ["sst2", "rte"]) == {"sst2": 10, "rte": None}
    assert bench.parse_limits(["7"], ["sst2", "rte"]) == {"sst2": 7, "rte": 7}


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm_eval is not installed")
def test_lm_eval_loads_the_exported_tasks(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    import lm_eval
    from lm_eval.tasks import TaskManager

    bench = load_bench()
    task, prompts, cfg, _ = export(tmp_path, bench)
    raw = bench.write_jsonl(tmp_path / "data" / "raw.jsonl", ROWS)
    builtin = Path(lm_eval.__file__).parent / "tasks" / "glue" / "rte" / "default.yaml"
    bench.write_task(tmp_path / "tasks", bench.choice_task_config("gluerl_mc_rte_test", builtin, raw, None, 0))
    tm = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False, verbosity="WARNING")

    gen = tm.load(["gluerl_gen_rte_test"])["tasks"]["gluerl_gen_rte_test"]
    docs = list(gen.eval_docs)
    assert [gen.doc_to_text(d) for d in docs] == prompts
    assert gen.config.generation_kwargs["until"] == ["</Judgement>"]
    assert gen.config.generation_kwargs["max_gen_toks"] == 8

    mc = tm.load(["gluerl_mc_rte_test"])["tasks"]["gluerl_mc_rte_test"]
    doc = list(mc.eval_docs)[0]
    assert mc.config.output_type == "multiple_choice"
    assert mc.doc_to_text(doc) == "A cat sat on the mat.\nQuestion: A cat sat. True or False?\nAnswer:"
    assert mc.doc_to_choice(doc) == ["True", "False"]
