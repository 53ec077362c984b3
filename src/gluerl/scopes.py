"""What each stage reads from the config: one declaration that the rules' params and the scripts share.

A rule's ``params`` carry exactly the config its script reads (``scoped_json``), so Snakemake reruns
a job when, and only when, something it reads changed. The script cuts the config it loaded to the
same declaration (``restrict``): reading a key the table does not list raises ``UndeclaredRead``
instead of silently getting a default, so the two cannot drift apart.

    READS["train_grpo"]   # ('task_files', 'grpo', 'ppo.reward', 'lora', 'training.dtype', ...)

A path is ``section`` (all of it), ``section.key``, ``models.{model}`` (one model's entry) or
``transfer.{target}`` (one target's entry of the list). ``mlflow`` is in no stage's reads: where a
run is logged changes no output, so it is no rerun trigger. The workflow hands it to the jobs in the
environment (``GLUERL_MLFLOW``), a person at a shell in ``--config``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from .errors import ConfigError, GlueRLError

# what training jobs read of `training` (accelerate_config: the job's launcher; mode is no read of
# a job: it names the adapter folder, {train_set}, so another mode is other jobs)
_TRAINING = ("training.task_mixing", "training.mixing_temperature", "training.dtype", "training.accelerate_config")
_EVALUATE = ("task_files", "models.{model}", "evaluation", "prompting.chat_template")

READS: dict[str, tuple[str, ...]] = {
    "download_dataset": ("task_files", "data"),
    "format_prompts": ("task_files", "prompting.balanced"),
    "prepare_model": ("models.{model}",),
    "train_sft": ("task_files", "sft", "lora", *_TRAINING, "prompting.chat_template"),
    "train_ppo": ("task_files", "ppo", "lora", *_TRAINING, "prompting.chat_template"),
    "train_grpo": ("task_files", "grpo", "ppo.reward", "lora", *_TRAINING, "prompting.chat_template"),
    "evaluate_model": _EVALUATE,
    "predict_test": _EVALUATE,
    "assemble_table": ("task_files", "tasks", "evaluation.bootstrap_resamples", "evaluation.bootstrap_seed",
                       "evaluation.confidence_level", "tables"),
    "plot_training": (),
    "download_transfer": ("task_files", "data", "transfer.{target}"),
    "evaluate_transfer": (*_EVALUATE, "transfer.{target}"),
    "assemble_transfer_table": ("task_files", "transfer"),
    "make_submission": ("task_files", "data.max_samples"),
    "import_local_dataset": ("data.local_dir",),  # no rule: a command a person runs
}

# paths a stage reads only in some of its jobs: (stage, path) -> test on the job's wildcards
# (zero-shot prompts have no demonstrations to balance: changing it must not redo them, nor the
# trainings that read them)
ONLY_WHEN = {
    ("format_prompts", "prompting.balanced"): lambda w: not str(w.get("template", "")).startswith("0shot"),
}

# rules that run another stage's script read what that script reads
RULE_STAGE = {"train_sft_ppo": "train_ppo", "format_transfer_prompts": "format_prompts"}

MLFLOW_ENV = "GLUERL_MLFLOW"


class UndeclaredRead(GlueRLError):
    """A stage read a config key that ``gluerl.scopes.READS`` does not declare for it (a bug)."""


class Scoped(dict):
    """A config section cut to a stage's declared keys; reading any other key of it raises."""

    def __init__(self, data: Mapping, stage: str, where: str, hidden: set[str]):
        super().__init__(data)
        self._stage, self._where, self._hidden = stage, where, set(hidden)

    def _refuse(self, key):
        path = f"{self._where}.{key}" if self._where else str(key)
        raise UndeclaredRead(f"stage {self._stage} reads {path}, which gluerl.scopes.READS[{self._stage!r}] does not "
                             "declare: add it there (its rule's params then carry it)")

    def __missing__(self, key):
        self._refuse(key)

    def get(self, key, default=None):
        if key in self._hidden:
            self._refuse(key)
        return super().get(key, default)

    def __deepcopy__(self, memo):
        import copy

        return Scoped({k: copy.deepcopy(v, memo) for k, v in self.items()}, self._stage, self._where, self._hidden)

    def __reduce__(self):
        return (Scoped, (dict(self), self._stage, self._where, self._hidden))


def stage_of(rule: str) -> str:
    return RULE_STAGE.get(rule, rule)


def _paths(stage: str, wildcards: Mapping[str, Any]) -> list[list[str]]:
    if stage not in READS:
        raise KeyError(f"no config reads declared for stage {stage!r} (gluerl.scopes.READS)")
    out = []
    for path in READS[stage]:
        if (stage, path) in ONLY_WHEN and not ONLY_WHEN[(stage, path)](wildcards):
            continue
        parts = path.split(".")
        out.append([str(wildcards[p[1:-1]]) if p.startswith("{") else p for p in parts])
    return out


def _transfer_entry(cfg: Mapping, name: str) -> list:
    return [e for e in (cfg.get("transfer") or []) if e.get("name") == name]


def scope(cfg: Mapping, stage: str, strict: bool = False, **wildcards: Any) -> dict:
    """The part of ``cfg`` that ``stage`` reads (``strict``: as ``Scoped`` dicts that refuse other keys)."""
    stage = stage_of(stage)
    out: dict[str, Any] = {}
    whole: set[str] = set()
    for parts in _paths(stage, wildcards):
        top = parts[0]
        if top == "transfer" and len(parts) == 2:
            out["transfer"] = _transfer_entry(cfg, parts[1])
            if strict and not out["transfer"]:
                names = [e.get("name") for e in cfg.get("transfer") or []]
                raise ConfigError(f"transfer: no target named {parts[1]!r}; configured: {names}")
            continue
        if strict and stage == "prepare_model" and parts[1] not in (cfg.get("models") or {}):
            # the others take a prepared folder (--model-dir) and read only its options, if any
            raise ConfigError(f"models: no model named {parts[1]!r}; configured: {sorted(cfg.get('models') or {})}")
        if len(parts) == 1:
            out[top] = cfg.get(top)
            whole.add(top)
            continue
        if top in whole:
            continue
        node, dst = cfg.get(top) or {}, out.setdefault(top, {})
        for p in parts[1:-1]:
            node, dst = (node or {}).get(p) or {}, dst.setdefault(p, {})
        if parts[-1] in (node or {}):
            dst[parts[-1]] = node[parts[-1]]
    if not strict:
        return out
    sections = {k: v for k, v in out.items()}
    for top, value in out.items():
        if top not in whole and isinstance(value, dict):
            hidden = set(cfg.get(top) or {}) - set(value)
            sections[top] = Scoped(value, stage, top, hidden)
    return Scoped(sections, stage, "", set(cfg) - set(out))


def scoped_json(cfg: Mapping, rule: str, **wildcards: Any) -> str:
    """What a rule passes as ``--config-json``: exactly the config its script reads, canonical JSON."""
    return json.dumps(scope(cfg, rule, **wildcards), sort_keys=True)


def mlflow_settings(cfg: Mapping) -> dict:
    """The MLflow section a job logs with: the config's, with ``$GLUERL_MLFLOW`` (set by the workflow) over it."""
    out = dict(cfg.get("mlflow") or {})
    env = os.environ.get(MLFLOW_ENV)
    if env:
        out.update(json.loads(env))
    return out


def restrict(cfg: Mapping, stage: str, **wildcards: Any) -> dict:
    """A loaded (defaults filled) config cut to ``stage``'s reads, plus the MLflow settings."""
    out = scope(cfg, stage, strict=True, **wildcards)
    dict.__setitem__(out, "mlflow", mlflow_settings(cfg))
    out._hidden.discard("mlflow")
    return out
