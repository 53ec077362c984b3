"""The ``ppo`` section of the config as a typed, frozen dataclass.

The schema (``gluerl/schemas/config.schema.yaml``, ``properties.ppo``) stays the one description of
every key, with its default; :class:`PPOConfig` names the same keys as attributes, so a typo fails
at construction (or at the attribute) instead of deep inside a training step.
``tests/test_ppo_config.py`` checks that its fields are exactly the schema's keys.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from ..errors import ConfigError


@dataclass(frozen=True)
class PPOConfig:
    """Hyperparameters of :class:`gluerl.ppo.PPOTrainer`, by topic (descriptions and defaults: the schema).

    - optimisation: ``learning_rate``, ``value_learning_rate``, ``warmup_steps``, ``optimizer``, ``steps``,
      ``batch_size`` (rollouts per update per process), ``mini_batch_size``, ``ppo_epochs``,
      ``gradient_accumulation_steps``, ``max_grad_norm``;
    - sampling: ``min_new_tokens``, ``max_new_tokens`` (the bound drawn per batch), ``temperature``,
      ``top_k``, ``top_p``;
    - PPO: ``gamma``, ``lam``, ``cliprange``, ``cliprange_value``, ``vf_coef``, ``value_head_init``,
      ``whiten_advantages``, ``advantage`` (gae | group), ``rollouts_per_prompt``;
    - KL penalty: ``kl_coef``, ``adaptive_kl``, ``target_kl``, ``kl_horizon``, ``reference``;
    - speed and files: ``share_prefix``, ``save_every``;
    - ``reward``: the rule reward's keyword arguments (:class:`gluerl.rewards.RewardRule`).

    The values are the config's own (no conversion), so the numbers are the dict lookups' numbers.
    """

    # optimisation
    learning_rate: float
    value_learning_rate: float | None  # None: the value head at learning_rate
    warmup_steps: int  # updates over which the learning rate rises linearly to learning_rate
    optimizer: str  # adamw | adafactor
    steps: int
    batch_size: int
    mini_batch_size: int
    ppo_epochs: int
    gradient_accumulation_steps: int
    max_grad_norm: float | None  # None: no clipping (the norm is still logged)
    # sampling
    min_new_tokens: int
    max_new_tokens: int
    temperature: float
    top_k: int
    top_p: float
    # PPO
    gamma: float
    lam: float
    cliprange: float
    cliprange_value: float
    vf_coef: float
    value_head_init: str  # zero | normal
    whiten_advantages: bool
    advantage: str  # gae | group (leave-one-out over the rollouts of a prompt)
    rollouts_per_prompt: int
    # KL penalty
    kl_coef: float
    adaptive_kl: bool
    target_kl: float
    kl_horizon: int
    reference: str  # initial | base
    # speed and files
    share_prefix: bool
    save_every: int
    # the rule reward
    reward: Mapping[str, Any]

    def __post_init__(self) -> None:
        if self.min_new_tokens > self.max_new_tokens:
            raise ConfigError("ppo.min_new_tokens must not exceed ppo.max_new_tokens")
        if self.batch_size % self.rollouts_per_prompt:
            raise ConfigError(f"ppo.batch_size ({self.batch_size}) must be a multiple of ppo.rollouts_per_prompt "
                              f"({self.rollouts_per_prompt})")
        if self.advantage == "group" and self.rollouts_per_prompt < 2:
            raise ConfigError("ppo.advantage group needs ppo.rollouts_per_prompt of at least 2 (a prompt's other "
                              "rollouts are its baseline)")

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> PPOConfig:
        """From a validated config's ``ppo`` section (defaults filled, :func:`gluerl.config.load_config`)."""
        names = [f.name for f in fields(cls)]
        missing, unknown = [n for n in names if n not in section], sorted(set(section) - set(names))
        if missing or unknown:
            wrong = [f"{what} {', '.join(keys)}" for what, keys in (("missing", missing), ("unknown", unknown)) if keys]
            raise ConfigError(f"ppo section: {'; '.join(wrong)} (gluerl.config.load_config fills the defaults)")
        return cls(**{n: section[n] for n in names})
