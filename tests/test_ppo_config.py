"""PPOConfig is the schema's ``ppo`` section, typed: the same keys, the config's values, typos refused."""

import dataclasses

import pytest

from gluerl.config import load_config, schema
from gluerl.errors import ConfigError
from gluerl.ppo import PPOConfig


def test_fields_are_the_schemas_ppo_keys():
    keys = list(schema()["properties"]["ppo"]["properties"])
    assert [f.name for f in dataclasses.fields(PPOConfig)] == keys  # same names, same order


def test_built_from_a_config_with_defaults_applied():
    cfg = load_config(None, {"ppo": {"steps": 3, "max_grad_norm": None, "reward": {"invalid": -2.0}}})
    ppo = PPOConfig.from_section(cfg["ppo"])
    assert dataclasses.asdict(ppo) == cfg["ppo"]
    assert ppo.steps == 3 and ppo.max_grad_norm is None and ppo.reward["invalid"] == -2.0
    defaults = schema()["properties"]["ppo"]["properties"]
    assert ppo.learning_rate == defaults["learning_rate"]["default"] and ppo.optimizer == "adamw"
    with pytest.raises(dataclasses.FrozenInstanceError):
        ppo.steps = 4


def test_typos_and_missing_keys_fail_at_construction():
    section = load_config(None)["ppo"]
    with pytest.raises(ConfigError, match="unknown learnin_rate"):
        PPOConfig.from_section({**section, "learnin_rate": 1e-5})
    with pytest.raises(ConfigError, match="missing steps"):
        PPOConfig.from_section({k: v for k, v in section.items() if k != "steps"})
    with pytest.raises(ConfigError, match="min_new_tokens must not exceed"):
        PPOConfig.from_section({**section, "min_new_tokens": 9, "max_new_tokens": 8})


def test_rollout_groups_must_divide_the_batch_and_group_advantages_need_two():
    section = load_config(None)["ppo"]
    with pytest.raises(ConfigError, match=r"batch_size \(16\) must be a multiple of ppo.rollouts_per_prompt \(3\)"):
        PPOConfig.from_section({**section, "rollouts_per_prompt": 3})
    with pytest.raises(ConfigError, match="group needs ppo.rollouts_per_prompt of at least 2"):
        PPOConfig.from_section({**section, "advantage": "group"})
    assert PPOConfig.from_section({**section, "advantage": "group", "rollouts_per_prompt": 4}).rollouts_per_prompt == 4
