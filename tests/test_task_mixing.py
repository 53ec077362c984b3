"""Multi-task mixing (issue 13, defect 9): ``training.task_mixing`` proportional, uniform or temperature.

Training records were mixed in proportion to the tasks' sizes only, so MNLI and QQP would drown the
rest of GLUE. With 100 rows of one task and 10 of another: uniform gives equal shares, proportional
keeps 10:1, temperature (p ∝ n^(1/T)) lies in between; the total stays 110; the draw depends only
on the seed. SFT, PPO and GRPO read the same setting where their records are loaded.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from gluerl.config import load_config
from gluerl.io import write_jsonl
from gluerl.prompts import format_split
from gluerl.tasks import get_task
from gluerl.testing import generate_rows

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"sst2": 100, "rte": 10}


@pytest.fixture(scope="module")
def prompt_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    return [(t, write_jsonl(root / f"{t}.jsonl", format_split(generate_rows(t, n), get_task(t))))
            for t, n in SIZES.items()]


def records(strategy, temperature=2.0, seed=1, files=None):
    from gluerl.training import load_train_records

    return load_train_records(files, None, "never", task_mixing=strategy, mixing_temperature=temperature, seed=seed)


def shares(recs):
    c = Counter(r["task"] for r in recs)
    return c["sst2"], c["rte"]


def test_uniform_gives_equal_shares(prompt_files):
    recs = records("uniform", files=prompt_files)
    assert shares(recs) == (55, 55)
    rte = [r["idx"] for r in recs if r["task"] == "rte"]
    assert all(rte.count(i) in (5, 6) for i in range(10))          # whole repeats plus a sample
    sst2 = [r["idx"] for r in recs if r["task"] == "sst2"]
    assert len(set(sst2)) == 55                                    # down-sampled without replacement


def test_proportional_keeps_ten_to_one_and_the_rows(prompt_files):
    recs = records("proportional", files=prompt_files)
    assert shares(recs) == (100, 10)
    assert [r["idx"] for r in recs] == list(range(100)) + list(range(10))


def test_temperature_lies_in_between(prompt_files):
    a, b = shares(records("temperature", 2.0, files=prompt_files))
    assert a + b == 110 and 55 < a < 100 and 10 < b < 55
    assert (a, b) == (84, 26)                                      # 110 * sqrt(100) / (sqrt(100) + sqrt(10))
    assert shares(records("temperature", 1.0, files=prompt_files)) == (100, 10)
    assert shares(records("temperature", 1e9, files=prompt_files)) == (55, 55)
    hotter = shares(records("temperature", 5.0, files=prompt_files))
    assert hotter[1] > b


def test_the_draw_depends_on_the_seed_only(prompt_files):
    one = [(r["task"], r["idx"]) for r in records("uniform", seed=1, files=prompt_files)]
    assert one == [(r["task"], r["idx"]) for r in records("uniform", seed=1, files=prompt_files)]
    assert one != [(r["task"], r["idx"]) for r in records("uniform", seed=2, files=prompt_files)]


def test_a_bad_strategy_or_temperature_names_the_key(prompt_files):
    from gluerl.errors import ConfigError

    with pytest.raises(ConfigError, match="training.task_mixing"):
        records("by_size", files=prompt_files)
    with pytest.raises(ConfigError, match="training.mixing_temperature"):
        records("temperature", 0.0, files=prompt_files)


def test_the_schema_declares_both_keys_with_defaults():
    cfg = load_config(None, {"training": {"mode": "multi", "task_mixing": "uniform"}})
    assert cfg["training"]["task_mixing"] == "uniform" and cfg["training"]["mixing_temperature"] == 2.0
    assert load_config(None, {})["training"]["task_mixing"] == "proportional"


class Captured(Exception):
    pass


def _capture(monkeypatch, module, name, position=0):
    """Replace ``module.name`` (what a trainer builds from its records, argument ``position``) by a
    recorder that stops the run."""
    def grab(*a, **k):
        raise Captured(list(a[position] if len(a) > position else k["records"]))

    monkeypatch.setattr(module, name, grab)


@pytest.mark.parametrize("method", ["sft", "grpo", "ppo"])
def test_every_trainer_mixes_its_records(method, tiny_model, prompt_files, tmp_path, monkeypatch):
    """SFT, GRPO (their datasets) and PPO (the trainer's records) see the uniformly mixed records."""
    import gluerl.grpo
    import gluerl.ppo
    import gluerl.sft

    over = {"training": {"mode": "multi", "task_mixing": "uniform"}, "mlflow": {"enabled": False}}
    if method == "ppo":
        import importlib.util

        _capture(monkeypatch, gluerl.ppo, "PPOTrainer", position=2)   # (cfg, model_dir, records, ...)
        spec = importlib.util.spec_from_file_location("script_train_ppo", ROOT / "scripts" / "train_ppo.py")
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
        argv = ["--config-json", json.dumps(over), "--model-dir", str(tiny_model), "--output-dir", str(tmp_path / "o")]
        for t, p in prompt_files:
            argv += ["--prompts", f"{t}={p}"]
        with pytest.raises(Captured) as e:
            script.main(argv)
    else:
        module = gluerl.sft if method == "sft" else gluerl.grpo
        _capture(monkeypatch, module, f"{method}_dataset")
        build = gluerl.sft.build_sft_trainer if method == "sft" else gluerl.grpo.build_grpo_trainer
        with pytest.raises(Captured) as e:
            build(load_config(None, over, check=False), tiny_model, prompt_files, tmp_path / "o")
    assert shares(e.value.args[0]) == (55, 55)
