"""Evaluate a model (optionally with its source task's LoRA adapter) on a transfer target.

    python scripts/evaluate_transfer.py --config config/transfer-example.yaml --target imdb \
        --method sft --model smollm2-135m --seed 1 --model-dir results/models/smollm2-135m \
        --adapter results/checkpoints/sft/smollm2-135m/sst2/seed1 \
        --prompts data/transfer/prompts/0shot/imdb.jsonl \
        --output results/transfer/sft/smollm2-135m/seed1/imdb.json \
        --predictions results/transfer/sft/smollm2-135m/seed1/imdb.predictions.jsonl

The prompts are the source task's (scripts/format_prompts.py --task <source>); answers are
parsed with its label words and scored with its metrics over the target's classes
(gluerl.transfer.score). The JSON has the layout of scripts/evaluate.py's, one column per target.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

from gluerl import cli
from gluerl.budgets import check_token_budget
from gluerl.errors import DataError
from gluerl.evaluation import evaluate_split
from gluerl.io import read_jsonl, write_json, write_jsonl
from gluerl.models import load_model, load_tokenizer
from gluerl.tasks import registry
from gluerl.tracking import eval_metrics, flatten, start_run
from gluerl.transfer import BENCHMARK, find_target, score

log = logging.getLogger("gluerl.evaluate_transfer")


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--target", required=True, help="name of an entry of the config's transfer list")
    cli.add_model_args(p, "LoRA adapter folder of the source task (or the multi-task one)")
    p.add_argument("--prompts", required=True, help="prompt file of the target's rows")
    p.add_argument("--output", required=True, help="result JSON")
    p.add_argument("--predictions", required=True, help="per-example predictions JSONL")
    args = p.parse_args(argv)
    cfg = cli.load(args, "evaluate_transfer", model=args.model, target=args.target)
    tasks = registry(cfg["task_files"])
    target = find_target(cfg, tasks, args.target)
    source = tasks[target.source_task]
    records = read_jsonl(args.prompts)
    if not records:
        raise DataError("prompt file is empty", args.prompts)
    ev = cfg["evaluation"]
    params = {**flatten(ev, "evaluation"), "model": args.model, "target": target.name, "source_task": source.name,
              "dataset": target.source(), "method": args.method, "seed": args.seed, "adapter": args.adapter or "",
              "snakemake_rule": os.environ.get("GLUERL_RULE", "")}
    with start_run(cfg["mlflow"], f"transfer-{args.method}-{args.model}-{target.name}-seed{args.seed}", "transfer",
                   params) as tracker:
        spec = cfg["models"].get(args.model, {})
        trust = spec.get("trust_remote_code", False)
        t0 = time.perf_counter()
        tok = load_tokenizer(args.model_dir, trust)
        check_token_budget("evaluation.max_new_tokens", ev["max_new_tokens"], [source], tok)
        model = load_model(args.model_dir, args.adapter, ev["dtype"], ev["device"], trust)
        load_seconds = time.perf_counter() - t0
        unscored = dataclasses.replace(source, labelled=False)  # scored below, over the target's classes
        res, preds = evaluate_split(model, tok, unscored, target.split, records, ev,
                                    cfg["prompting"]["chat_template"], args.seed)
        res.update(score(preds, target, source, ev))
        log.info("%s %s <- %s: %s", args.method, target.name, source.name,
                 {k: round(v, 4) for k, v in res.items() if isinstance(v, float)})
        write_jsonl(args.predictions, preds)
        tracker.log_metrics(eval_metrics(target.name, res), grouped=False)
        write_json(args.output, {
            "task": target.name, "benchmark": BENCHMARK, "source_task": source.name, "dataset": target.source(),
            "method": args.method, "model": args.model, "seed": args.seed, "adapter": args.adapter,
            "columns": {target.name: res}, "load_seconds": round(load_seconds, 3), "evaluation": ev,
            "chat_template": cfg["prompting"]["chat_template"],
        })
        tracker.log_artifact(args.output)
        tracker.log_artifact(args.predictions)


if __name__ == "__main__":
    cli.run(main)
