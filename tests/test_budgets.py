"""Token budgets must hold the longest answer ``label_word</Judgement>`` (issue 13, defect 8).

``not_entailment</Judgement>`` is 10 SmolLM2 tokens; the demo's PPO drew 6 to 8 new tokens, so an RTE
rollout could never reach its closing tag. Each stage fails at its start, once the tokenizer is
loaded and before any model is, with one line naming the config key, the task, the label and the
tokens needed; the demo config fits its model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gluerl.budgets import answer_tokens, check_token_budget, longest_answer
from gluerl.errors import ConfigError
from gluerl.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok(tiny_model):
    from gluerl.models import load_tokenizer

    return load_tokenizer(tiny_model)


def test_longest_answer_counts_the_closing_tag(tok):
    task, word, need = longest_answer([get_task("cola"), get_task("rte")], tok)
    assert (task, word) == ("rte", "not_entailment")
    assert need == len(tok("not_entailment</Judgement>", add_special_tokens=False)["input_ids"])
    assert need > answer_tokens("entailment</Judgement>", tok)


def test_regression_answers_are_the_scores(tok):
    task, word, need = longest_answer([get_task("stsb")], tok)
    assert task == "stsb" and 0 <= float(word) <= 5 and need >= answer_tokens("3.8</Judgement>", tok)


def test_a_budget_shorter_than_an_answer_fails_naming_everything(tok):
    tasks = [get_task("cola"), get_task("rte")]
    _, _, need = longest_answer(tasks, tok)
    check_token_budget("ppo.min_new_tokens", need, tasks, tok)           # exactly enough
    with pytest.raises(ConfigError) as e:
        check_token_budget("ppo.min_new_tokens", need - 1, tasks, tok)
    msg = str(e.value)
    assert "\n" not in msg
    assert f"ppo.min_new_tokens is {need - 1}" in msg and "'rte'" in msg and "'not_entailment'" in msg
    assert f"needs {need} tokens" in msg and f"at least {need}" in msg


def _script(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _prompts(path, task, n=4):
    from gluerl.io import write_jsonl
    from gluerl.prompts import format_split
    from gluerl.testing import generate_rows

    return write_jsonl(path, format_split(generate_rows(task, n), get_task(task)))


@pytest.fixture
def no_model_load(monkeypatch):
    """Any model load fails the test: the check comes before it."""
    import transformers

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the token budget was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)


def test_train_ppo_fails_at_its_start(tiny_model, tok, tmp_path, capsys, no_model_load):
    need = longest_answer([get_task("rte")], tok)[2]
    cfg = {"ppo": {"min_new_tokens": need - 1, "max_new_tokens": need + 2, "steps": 1}, "mlflow": {"enabled": False}}
    code = _script("train_ppo").main(["--config-json", json.dumps(cfg), "--model-dir", str(tiny_model),
                                      "--prompts", f"rte={_prompts(tmp_path / 'rte.jsonl', 'rte')}",
                                      "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and f"ppo.min_new_tokens is {need - 1}" in err and "'not_entailment'" in err, err
    assert not (tmp_path / "out").exists()


def test_grpo_fails_at_its_start(tiny_model, tok, tmp_path, no_model_load):
    from gluerl.config import load_config
    from gluerl.grpo import build_grpo_trainer

    need = longest_answer([get_task("rte")], tok)[2]
    cfg = load_config(None, {"grpo": {"max_completion_length": need - 1}}, check=False)
    with pytest.raises(ConfigError, match=rf"grpo.max_completion_length is {need - 1}, but task 'rte'"):
        build_grpo_trainer(cfg, tiny_model, [("rte", _prompts(tmp_path / "rte.jsonl", "rte"))], tmp_path / "out")


def test_evaluate_fails_at_its_start(tiny_model, tok, tmp_path, capsys, no_model_load):
    from gluerl import cli

    need = longest_answer([get_task("rte")], tok)[2]
    cfg = {"evaluation": {"max_new_tokens": need - 1, "device": "cpu"}, "mlflow": {"enabled": False}}
    out = tmp_path / "rte.json"
    with pytest.raises(SystemExit) as e:
        cli.run(_script("evaluate").main, [
            "--config-json", json.dumps(cfg), "--task", "rte", "--method", "zeroshot", "--model", "tiny",
            "--model-dir", str(tiny_model), "--prompts", f"validation={_prompts(tmp_path / 'v.jsonl', 'rte')}",
            "--output", str(out), "--predictions", str(tmp_path / "p.jsonl")])
    err = capsys.readouterr().err
    assert e.value.code == 1 and f"evaluation.max_new_tokens is {need - 1}" in err, err
    assert not out.exists()


def test_the_demo_config_fits_its_model():
    """config/config.yaml's budgets hold every configured task's answers in SmolLM2's tokenizer."""
    from gluerl.config import load_config
    from gluerl.models import gguf_location

    from transformers import AutoTokenizer

    cfg = load_config(ROOT / "config" / "config.yaml", None, check=False)
    (spec,) = cfg["models"].values()
    try:
        path = gguf_location(spec["gguf"]["package"], spec["gguf"]["file"])  # found, not imported
    except ConfigError as e:
        pytest.skip(f"the demo model is not installed: {e}")
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    tasks = [get_task(t, cfg["task_files"]) for t in cfg["tasks"]]
    assert longest_answer([get_task("rte")], tok)[2] == 10       # the count issue 13 names
    for key, budget in [("ppo.min_new_tokens", cfg["ppo"]["min_new_tokens"]),
                        ("grpo.max_completion_length", cfg["grpo"]["max_completion_length"]),
                        ("evaluation.max_new_tokens", cfg["evaluation"]["max_new_tokens"])]:
        check_token_budget(key, budget, tasks, tok)

