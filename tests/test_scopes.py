"""gluerl.scopes: one declaration of what each stage reads, shared by the rules' params and the scripts."""

import json
import re
from pathlib import Path

import pytest
import yaml

from gluerl.config import load_config, schema
from gluerl.scopes import READS, RULE_STAGE, UndeclaredRead, mlflow_settings, restrict, scope, scoped_json

REPO = Path(__file__).resolve().parents[1]


def _target(name):
    return {"name": name, "source_task": "sst2", "dataset": {"hub": "org/x"}, "fields": {"sentence": "text"}}


def _full():
    return load_config(overrides={"models": {"m": {"path": "/x"}, "other": {"path": "/y"}},
                                  "transfer": [_target("t1"), _target("t2")]})


def test_every_declared_path_is_a_schema_key():
    props = schema()["properties"]
    for stage, paths in READS.items():
        for path in paths:
            top, *rest = path.split(".")
            assert top in props, (stage, path)
            node = props[top]
            for part in rest:
                if part.startswith("{"):
                    break
                assert part in node.get("properties", {}), (stage, path)
                node = node["properties"][part]


def test_mlflow_is_no_stage_read():
    assert not [s for s, paths in READS.items() if any(p.split(".")[0] == "mlflow" for p in paths)]


def test_scope_cuts_to_the_declared_keys():
    cfg = _full()
    grpo = scope(cfg, "train_grpo")
    assert set(grpo) == {"task_files", "grpo", "ppo", "lora", "training", "prompting"}
    assert set(grpo["ppo"]) == {"reward"} and set(grpo["prompting"]) == {"chat_template"}
    assert scope(cfg, "prepare_model", model="m") == {"models": {"m": cfg["models"]["m"]}}
    assert [e["name"] for e in scope(cfg, "download_transfer", target="t2")["transfer"]] == ["t2"]
    # zero-shot prompts do not read prompting.balanced; few-shot ones do
    assert "prompting" not in scope(cfg, "format_prompts", template="0shot")
    assert scope(cfg, "format_prompts", template="5shot-seed1")["prompting"] == {"balanced": True}
    assert scope(cfg, "train_sft_ppo") == scope(cfg, "train_ppo")  # same script, same reads
    assert json.loads(scoped_json(cfg, "evaluate_model", model="m")) == scope(cfg, "evaluate_model", model="m")


def test_a_script_reading_an_undeclared_key_fails_loudly():
    cfg = restrict(_full(), "train_grpo")
    assert cfg["ppo"]["reward"]["invalid"] == -3.0
    with pytest.raises(UndeclaredRead, match=r"train_grpo reads ppo.learning_rate"):
        cfg["ppo"]["learning_rate"]
    with pytest.raises(UndeclaredRead, match=r"reads ppo.learning_rate"):
        cfg["ppo"].get("learning_rate", 1.0)  # a default must not hide the read
    with pytest.raises(UndeclaredRead, match=r"reads evaluation"):
        cfg["evaluation"]
    ev = restrict(_full(), "evaluate_model", model="m")
    with pytest.raises(UndeclaredRead, match=r"reads models.other"):
        ev["models"]["other"]
    assert ev["mlflow"]["enabled"] is True  # mlflow always travels with the job, outside the params


def test_unknown_model_or_target_is_one_line():
    from gluerl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"models: no model named 'nope'; configured: \['m', 'other'\]"):
        restrict(_full(), "prepare_model", model="nope")
    with pytest.raises(ConfigError, match=r"transfer: no target named 'x'"):
        restrict(_full(), "download_transfer", target="x")


def test_mlflow_settings_come_from_the_workflow_environment(monkeypatch):
    cfg = _full()
    monkeypatch.setenv("GLUERL_MLFLOW", json.dumps({"enabled": False, "experiment": "e"}))
    assert mlflow_settings(cfg)["enabled"] is False and mlflow_settings(cfg)["experiment"] == "e"
    monkeypatch.delenv("GLUERL_MLFLOW")
    assert mlflow_settings(cfg)["enabled"] is True


def test_every_rule_and_script_names_a_declared_stage():
    """Rules pass stage_config("X") and scripts cli.load(args, "X"): X must be in the table."""
    used = set()
    for smk in (REPO / "rules").glob("*.smk"):
        text = smk.read_text()
        for rule, body in re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)+)", text, re.M):
            m = re.search(r'cfg=stage_config\("(\w+)"\)', body)
            if "--config-json" in body:
                assert m and m.group(1) == rule, f"rule {rule}: params cfg=stage_config({rule!r})"
                used.add(RULE_STAGE.get(rule, rule))
    for script in (REPO / "scripts").glob("*.py"):
        for stage in re.findall(r'cli\.load\(args, "(\w+)"', script.read_text()):
            assert stage in READS, (script.name, stage)
            used.add(stage)
    assert used - set(READS) == set()
