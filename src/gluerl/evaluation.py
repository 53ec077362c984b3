"""Evaluation: generate answers for a task's evaluation splits, parse them, score them.

The model is loaded once per task (all its evaluation splits) by the caller. The result holds,
per table column (one per evaluation split: ``mnli_m``, ``mnli_mm``...), the task's metrics, its
score (their mean), the invalid rate, the number of examples and bootstrap confidence intervals
of every metric and the score (``ci``, from ``evaluation.bootstrap_*``); predictions keep every
completion with its parse and the SHA-256 of the exact prompt text the model read
(``prompt_sha256``, after the context-overflow policy), so any number in a table can be traced to
the text behind it.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

from .config import section
from .context import fit_prompts, prompt_budget
from .generation import generate
from .metrics import compute_metrics
from .parsing import parse_answer
from .prompts import render_prompt
from .records import sha256_text
from .tasks import Task

log = logging.getLogger(__name__)


def evaluate_split(model, tokenizer, task: Task, split: str, records: Sequence[dict[str, Any]], eval_cfg: dict,
                   chat_template: str = "auto", seed: int = 0, progress: bool = True, source=None):
    """(column result, prediction rows) for one split's prompt records (read from the file ``source``)."""
    eval_cfg = section("evaluation", eval_cfg)
    prompts = [render_prompt(r["messages"], tokenizer, chat_template) for r in records]
    # prompts longer than the context: cut by the configured policy (or an error), counted in the result
    limit = prompt_budget(model, eval_cfg["max_new_tokens"], eval_cfg["max_prompt_tokens"])
    prompts, overflow = fit_prompts(prompts, tokenizer, limit, eval_cfg["context_overflow"],
                                    source)
    t0 = time.perf_counter()
    completions = generate(
        model, tokenizer, prompts, max_new_tokens=eval_cfg["max_new_tokens"],
        batch_size=eval_cfg["batch_size"], do_sample=eval_cfg["do_sample"],
        temperature=eval_cfg["temperature"], top_p=eval_cfg["top_p"], seed=seed,
        progress=progress, desc=f"{task.name}[{split}]", cascade_prefix=eval_cfg["cascade_attention"],
    )
    seconds = time.perf_counter() - t0
    preds = [parse_answer(c, task) for c in completions]
    rows = []
    for r, text, c, p in zip(records, prompts, completions, preds):
        rows.append({"split": split, "idx": r["idx"], "label": r["label"], "prompt_sha256": sha256_text(text),
                     "completion": c, "prediction": p,
                     "valid": p is not None,
                     "correct": None if r["label"] is None or task.is_regression else p == r["label"],
                     **{k: r[k] for k in task.extra_fields if k in r}})
    result: dict[str, Any] = {"split": split, "n": len(records), "seconds": round(seconds, 3),
                              "examples_per_second": round(len(records) / seconds, 3) if seconds > 0 else None,
                              "invalid_rate": sum(p is None for p in preds) / len(preds), **overflow.as_dict()}
    if task.labelled:
        result.update(compute_metrics([r["label"] for r in records], preds, task, meta=records,
                                      resamples=eval_cfg["bootstrap_resamples"],
                                      seed=eval_cfg["bootstrap_seed"],
                                      confidence=eval_cfg["confidence_level"]))
    return result, rows


def evaluate_task(model_dir, task: Task, records: dict[str, Sequence[dict[str, Any]]], files: dict[str, Any],
                  eval_cfg: dict, chat_template: str = "auto", *, method: str, model: str, seed: int = 1,
                  adapter=None, trust_remote_code: bool = False,
                  limit: int | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(result record, prediction rows) of a model folder (plus ``adapter``) on a task's evaluation
    splits: ``records`` and ``files`` map split -> prompt rows and the prompt file they came from
    (``limit``: rows per split the caller kept, recorded). The model is loaded once; the record is what
    ``results/eval/.../{task}.json`` holds (``scripts/evaluate.py`` and ``gluerl eval`` both write it)."""
    from .budgets import check_token_budget
    from .models import load_model, load_tokenizer
    from .records import evaluation_record

    t0 = time.perf_counter()
    tok = load_tokenizer(model_dir, trust_remote_code)
    check_token_budget("evaluation.max_new_tokens", eval_cfg["max_new_tokens"], [task], tok)
    lm = load_model(model_dir, adapter, eval_cfg["dtype"], eval_cfg["device"], trust_remote_code)
    load_seconds = time.perf_counter() - t0
    columns, predictions = {}, []
    for split, rows in records.items():
        res, preds = evaluate_split(lm, tok, task, split, rows, eval_cfg, chat_template, seed, source=files[split])
        columns[task.eval_splits[split]] = res
        predictions += preds
        log.info("%s %s[%s]: %s", method, task.name, split,
                 {k: round(v, 4) for k, v in res.items() if isinstance(v, float)})
    record = {
        "task": task.name, "benchmark": task.benchmark, "method": method, "model": model,
        "seed": seed, "adapter": str(adapter) if adapter else adapter, "columns": columns,
        "load_seconds": round(load_seconds, 3), "evaluation": eval_cfg,
        "chat_template": chat_template,
        **evaluation_record(task.eval_splits, files, records, limit),
    }
    return record, predictions
