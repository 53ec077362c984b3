"""Evaluation: generate answers for a task's evaluation splits, parse them, score them.

The model is loaded once per task (all its evaluation splits) by the caller. The result holds,
per table column (one per evaluation split: ``mnli_m``, ``mnli_mm``...), the task's metrics, its
score (their mean), the invalid rate, the number of examples and bootstrap confidence intervals
of every metric and the score (``ci``, from ``evaluation.bootstrap_*``); predictions keep every
completion with its parse and the SHA-256 of the exact prompt text the model read
(``prompt_sha256``, after the context-overflow policy), so any number in a table can be traced to
the text behind it.

The stages that run a model on prompt files are here too, one function each, behind a thin script:
:func:`evaluate_model` (rule ``evaluate_model``, ``scripts/evaluate.py``), :func:`evaluate_transfer`
(``scripts/evaluate_transfer.py``) and :func:`predict_test` (``scripts/predict_test.py``). They share
:func:`load_evaluated_model`, :func:`stage_run` (the MLflow run) and :func:`write_results`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Sequence

from .budgets import answer_texts
from .config import model_spec, section
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
    drafts = answer_texts(task) if eval_cfg["answer_drafts"] else None  # used at greedy only
    t0 = time.perf_counter()
    completions = generate(
        model, tokenizer, prompts, max_new_tokens=eval_cfg["max_new_tokens"],
        batch_size=eval_cfg["batch_size"], do_sample=eval_cfg["do_sample"],
        temperature=eval_cfg["temperature"], top_p=eval_cfg["top_p"], seed=seed,
        progress=progress, desc=f"{task.name}[{split}]", cascade_prefix=eval_cfg["cascade_attention"],
        drafts=drafts,
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


def load_evaluated_model(model_dir, adapter, eval_cfg: dict, tasks: Sequence[Task], trust_remote_code: bool = False):
    """(model, tokenizer, seconds it took) of a model folder (plus ``adapter``) for evaluation: the
    tokenizer first, the ``evaluation.max_new_tokens`` budget checked against ``tasks``' answers, then
    the model (``evaluation.dtype`` and ``device``)."""
    from .budgets import check_token_budget
    from .models import load_model, load_tokenizer

    t0 = time.perf_counter()
    tok = load_tokenizer(model_dir, trust_remote_code)
    check_token_budget("evaluation.max_new_tokens", eval_cfg["max_new_tokens"], tasks, tok)
    lm = load_model(model_dir, adapter, eval_cfg["dtype"], eval_cfg["device"], trust_remote_code)
    return lm, tok, time.perf_counter() - t0


def rounded(result: dict[str, Any]) -> dict[str, float]:
    """A column result's float fields rounded to 4 places, for the log line."""
    return {k: round(v, 4) for k, v in result.items() if isinstance(v, float)}


def evaluate_task(model_dir, task: Task, records: dict[str, Sequence[dict[str, Any]]], files: dict[str, Any],
                  eval_cfg: dict, chat_template: str = "auto", *, method: str, model: str, seed: int = 1,
                  adapter=None, trust_remote_code: bool = False,
                  limit: int | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(result record, prediction rows) of a model folder (plus ``adapter``) on a task's evaluation
    splits: ``records`` and ``files`` map split -> prompt rows and the prompt file they came from
    (``limit``: rows per split the caller kept, recorded). The model is loaded once; the record is what
    ``results/eval/.../{task}.json`` holds (:func:`evaluate_model` and ``gluerl eval`` both write it)."""
    from .records import evaluation_record

    lm, tok, load_seconds = load_evaluated_model(model_dir, adapter, eval_cfg, [task], trust_remote_code)
    columns, predictions = {}, []
    for split, rows in records.items():
        res, preds = evaluate_split(lm, tok, task, split, rows, eval_cfg, chat_template, seed, source=files[split])
        columns[task.eval_splits[split]] = res
        predictions += preds
        log.info("%s %s[%s]: %s", method, task.name, split, rounded(res))
    record = {
        "task": task.name, "benchmark": task.benchmark, "method": method, "model": model,
        "seed": seed, "adapter": str(adapter) if adapter else adapter, "columns": columns,
        "load_seconds": round(load_seconds, 3), "evaluation": eval_cfg,
        "chat_template": chat_template,
        **evaluation_record(task.eval_splits, files, records, limit),
    }
    return record, predictions


# ---------------------------------------------------------------------------------------------
# the stages that run a model on prompt files (evaluate_model, evaluate_transfer, predict_test):
# one MLflow run each, the model loaded once, the rows written, the files and numbers tracked
# ---------------------------------------------------------------------------------------------
def stage_run(cfg: dict[str, Any], kind: str, stage: str, name: str, *, method: str, model: str, seed: int,
              adapter=None, names: dict[str, Any], sections: Sequence[str] = ("evaluation",),
              params: dict[str, Any] | None = None, tags: dict[str, Any] | None = None):
    """The started MLflow run (``gluerl.tracking.start_run``; use with ``with``) of a stage that runs
    ``model`` on prompt files, named ``{kind}-{method}-{model}-{name}-seed{seed}``. Its params: the
    config's ``sections`` flattened, the model, ``names`` (what it answers: task, target...), method,
    seed, adapter, the Snakemake rule, then ``params``."""
    import os

    from .tracking import flatten, start_run

    run_params = {k: v for s in sections for k, v in flatten(cfg[s], s).items()}
    run_params.update({"model": model, **names, "method": method, "seed": seed, "adapter": adapter or "",
                       "snakemake_rule": os.environ.get("GLUERL_RULE", ""), **(params or {})})
    return start_run(cfg["mlflow"], f"{kind}-{method}-{model}-{name}-seed{seed}", stage, run_params, tags=tags)


def write_results(tracker, predictions_file, predictions: Sequence[dict[str, Any]], output=None,
                  record: dict[str, Any] | None = None) -> None:
    """The prediction rows as JSON Lines and, with a ``record``, its columns' metrics logged and the
    record as JSON; then both files logged as artifacts (record first)."""
    from .io import write_json, write_jsonl
    from .tracking import eval_metrics

    write_jsonl(predictions_file, predictions)
    if record is not None:
        for col, res in record["columns"].items():
            tracker.log_metrics(eval_metrics(col, res), grouped=False)
        write_json(output, record)
        tracker.log_artifact(output)
    tracker.log_artifact(predictions_file)


def trusts_code(cfg: dict[str, Any], model: str) -> bool:
    """Whether the config's entry of ``model`` lets its folder's own code run (the schema's default:
    off). A stage that takes a prepared folder may have no entry of ``model``: the defaults then."""
    return model_spec(model, cfg["models"].get(model))["trust_remote_code"]


def evaluate_model(cfg: dict[str, Any], task: str, prompts: Sequence[str], model_dir, output, predictions, *,
                   method: str, model: str, seed: int = 1, adapter=None) -> dict[str, Any]:
    """The ``evaluate_model`` stage (``scripts/evaluate.py``): ``model_dir`` (plus ``adapter``) on the
    prompt files ``prompts`` (``SPLIT=FILE``, one per evaluation split of ``task``), in one MLflow run
    (linked to the adapter's training run); writes the record to ``output`` and the prediction rows to
    ``predictions``, and returns the record."""
    from .prompts import read_split_prompts
    from .records import data_params
    from .tasks import get_task
    from .tracking import training_run_of

    task = get_task(task, cfg["task_files"])
    files, records = read_split_prompts(prompts, task.eval_splits, task.name, "evaluation splits")
    trained_by = training_run_of(adapter)
    with stage_run(cfg, "eval", "evaluate", task.name, method=method, model=model, seed=seed, adapter=adapter,
                   names={"task": task.name}, sections=("evaluation", "prompting"),
                   params=data_params({task.eval_splits[s]: f for s, f in files.items()}),
                   tags={"gluerl.training_run_id": trained_by} if trained_by else None) as tracker:
        tracker.log_datasets({f"{task.eval_splits[s]}-{s}": f for s, f in files.items()}, "evaluation")
        record, rows = evaluate_task(model_dir, task, records, files, cfg["evaluation"],
                                     cfg["prompting"]["chat_template"], method=method, model=model, seed=seed,
                                     adapter=adapter, trust_remote_code=trusts_code(cfg, model))
        write_results(tracker, predictions, rows, output, record)
    return record


def evaluate_transfer(cfg: dict[str, Any], target: str, prompts, model_dir, output, predictions, *,
                      method: str, model: str, seed: int = 1, adapter=None) -> dict[str, Any]:
    """The ``evaluate_transfer`` stage (``scripts/evaluate_transfer.py``): ``model_dir`` (plus the source
    task's ``adapter``) on the prompt file of the config's transfer entry ``target`` (formatted as its
    source task's), parsed with the source task's label words and scored by
    :func:`gluerl.transfer.score`, in one MLflow run; writes the record (:func:`evaluate_model`'s
    layout, one column) to ``output`` and the prediction rows to ``predictions``, and returns it."""
    from .errors import DataError
    from .io import read_jsonl
    from .tasks import registry
    from .transfer import BENCHMARK, find_target, score

    stage_log = logging.getLogger("gluerl.evaluate_transfer")  # the stage's log lines keep the script's name
    tasks = registry(cfg["task_files"])
    target = find_target(cfg, tasks, target)
    source = tasks[target.source_task]
    records = read_jsonl(prompts)
    if not records:
        raise DataError("prompt file is empty", prompts)
    ev = cfg["evaluation"]
    with stage_run(cfg, "transfer", "transfer", target.name, method=method, model=model, seed=seed, adapter=adapter,
                   names={"target": target.name, "source_task": source.name, "dataset": target.source()}) as tracker:
        lm, tok, load_seconds = load_evaluated_model(model_dir, adapter, ev, [source], trusts_code(cfg, model))
        unscored = dataclasses.replace(source, labelled=False)  # scored below, over the target's classes
        res, preds = evaluate_split(lm, tok, unscored, target.split, records, ev, cfg["prompting"]["chat_template"],
                                    seed)
        res.update(score(preds, target, source, ev))
        stage_log.info("%s %s <- %s: %s", method, target.name, source.name, rounded(res))
        record = {
            "task": target.name, "benchmark": BENCHMARK, "source_task": source.name, "dataset": target.source(),
            "method": method, "model": model, "seed": seed, "adapter": adapter,
            "columns": {target.name: res}, "load_seconds": round(load_seconds, 3), "evaluation": ev,
            "chat_template": cfg["prompting"]["chat_template"],
        }
        write_results(tracker, predictions, preds, output, record)
    return record


def predict_test(cfg: dict[str, Any], task: str, prompts: Sequence[str], model_dir, output, *, method: str,
                 model: str, seed: int = 1, adapter=None) -> list[dict[str, Any]]:
    """The ``predict_test`` stage (``scripts/predict_test.py``): ``model_dir`` (plus ``adapter``) on the
    prompt files ``prompts`` (``SPLIT=FILE``, one per test split of ``task``), generated as evaluation
    generates (``evaluation.*``) but not scored, in one MLflow run; writes every row's completion and
    parse to ``output`` (JSON Lines; ``prediction`` null when the answer is invalid) and returns them."""
    from .prompts import read_split_prompts
    from .tasks import get_task

    stage_log = logging.getLogger("gluerl.predict_test")  # the stage's log lines keep the script's name
    task = get_task(task, cfg["task_files"])
    files, records = read_split_prompts(prompts, task.test_splits, task.name, "submission test splits")
    ev = cfg["evaluation"]
    with stage_run(cfg, "predict", "predict_test", task.name, method=method, model=model, seed=seed,
                   adapter=adapter, names={"task": task.name}) as tracker:
        lm, tok, _ = load_evaluated_model(model_dir, adapter, ev, [task], trusts_code(cfg, model))
        unscored = dataclasses.replace(task, labelled=False)  # test labels are hidden: no metrics
        predictions = []
        for split, rows in records.items():
            res, preds = evaluate_split(lm, tok, unscored, split, rows, ev, cfg["prompting"]["chat_template"], seed)
            for r in preds:
                r.pop("correct", None)
            predictions += preds
            stage_log.info("%s %s[%s]: %d rows, invalid rate %.4f", method, task.name, split, res["n"],
                           res["invalid_rate"])
            tracker.log_metrics({f"{split}.invalid_rate": res["invalid_rate"], f"{split}.n": res["n"]})
        write_results(tracker, output, predictions)
    return predictions
