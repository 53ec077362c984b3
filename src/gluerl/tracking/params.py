"""Params, tags and metric names as MLflow takes them: flattened, credentials hidden, grouped by prefix.

Pure functions over plain data; nothing here imports MLflow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

MAX_PARAM_LEN = 6000  # MLflow 3's MAX_PARAM_VAL_LENGTH
MAX_TAG_LEN = 8000  # MLflow 3's MAX_TAG_VAL_LENGTH
MAX_KEY_LEN = 250  # MLflow's MAX_ENTITY_KEY_LENGTH
REDACTED = "***"

# key words that mark a credential: whole words of the key (so max_new_tokens is not one) ...
_SECRET_WORDS = {"token", "password", "passwd", "secret", "authorization", "apikey", "credential", "credentials"}
# ... or substrings anywhere in the key
_SECRET_PARTS = ("api_key", "api-key", "access_key", "private_key", "password", "secret")
_SECRET_VALUES = re.compile(r"hf_[A-Za-z0-9]{20,}")
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")  # https://user:pass@host -> https://***@host
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")  # MLflow keys: alphanumerics, _ - . space /

NOT_METRICS = {"step", "max_new_tokens", "epoch_float"}  # the step axis and settings, not measurements
_GROUPS = {
    "objective": ("reward_mean", "reward", "reward_std", "accuracy", "invalid_rate", "kl", "kl_coef", "kl_coef_next",
                  "frac_reward_zero_std"),
    "policy": ("policy_loss", "entropy", "clipfrac", "approx_kl", "grad_norm", "response_length"),
    "value": ("value_loss", "value_clipfrac", "explained_variance", "return_mean"),
    "time": ("tokens_per_second", "seconds_generation", "seconds_scoring", "seconds_optimisation", "seconds_step",
             "step_time"),
    "train": ("loss", "learning_rate", "num_tokens", "mean_token_accuracy", "entropy_sft", "epoch", "episodes"),
}
_GROUP_OF = {k: g for g, keys in _GROUPS.items() for k in keys}


def flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (``prefix="x"`` -> ``{"x.a.b": 1}``); lists stay leaves."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def is_secret_key(key: str) -> bool:
    low = str(key).lower()
    words = re.split(r"[^a-z0-9]+", low)
    return (any(w in _SECRET_WORDS or w.endswith("token") for w in words)
            or any(p in low for p in _SECRET_PARTS))


def redact_text(text: str) -> str:
    """Hide credential-looking parts of a value: Hugging Face tokens, URL user:password@."""
    return _URL_USERINFO.sub(REDACTED + "@", _SECRET_VALUES.sub(REDACTED, text))


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, default=str)
    return str(value)


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    suffix = f"...[truncated {len(text)} chars]"
    return text[: limit - len(suffix)] + suffix


def _key(key: Any) -> str:
    return _BAD_KEY_CHARS.sub("_", str(key))[:MAX_KEY_LEN]


def clean_params(params: Mapping[str, Any], limit: int = MAX_PARAM_LEN) -> dict[str, str]:
    """Params as MLflow takes them: string values, credentials as ``***``, long values cut."""
    out = {}
    for k, v in params.items():
        value = REDACTED if is_secret_key(k) else redact_text(_to_str(v))
        out[_key(k)] = _truncate(value, limit)
    return out


def metric_key(name: str, prefix: str | None = None) -> str | None:
    """The grouped MLflow name of a logged value (``kl`` -> ``objective/kl``), ``None`` for one that is
    not a metric (``step``, ``max_new_tokens``). With ``prefix``, ``prefix/`` + the name with dots
    as slashes (``eval`` and ``rte.accuracy`` -> ``eval/rte/accuracy``). Names that already hold a
    ``/`` (TRL's ``rewards/...``, ``completions/...``) keep it, under ``answers/`` for ``pred_frac/``."""
    if prefix:
        return f"{prefix}/{name.replace('.', '/')}"
    if name in NOT_METRICS:
        return None
    if name.startswith("pred_frac/"):
        return "answers/" + name[len("pred_frac/"):]
    if "/" in name:
        return name
    if name.startswith("final."):
        inner = metric_key(name[len("final."):])
        return None if inner is None else f"final/{inner}"
    group = _GROUP_OF.get(name)
    return f"{group}/{name}" if group else name


def eval_metrics(column: str, result: Mapping[str, Any]) -> dict[str, float]:
    """An evaluation column's numbers as ``eval/`` metrics, its interval bounds as ``..._ci_lo/_ci_hi``."""
    out = {f"eval/{column}/{k}": v for k, v in result.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for k, bounds in (result.get("ci") or {}).items():
        if isinstance(bounds, (list, tuple)) and len(bounds) == 2:
            out[f"eval/{column}/{k}_ci_lo"], out[f"eval/{column}/{k}_ci_hi"] = bounds
    return out


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    item = getattr(v, "item", None)  # numpy / torch scalars; more than one element: not a number
    if callable(item):
        try:
            x = item()
        except (TypeError, ValueError, RuntimeError):
            return None
        return float(x) if isinstance(x, (int, float)) else None
    return None
