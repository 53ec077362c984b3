"""Predict a task's unlabelled test split(s) for a leaderboard submission (nothing is scored).

    python scripts/predict_test.py --config config/config.yaml --task mnli --method sft \
        --model smollm2-135m --seed 1 --model-dir results/models/smollm2-135m \
        --adapter results/checkpoints/sft/smollm2-135m/mnli/seed1 \
        --prompts test_matched=data/prompts/0shot/mnli/test_matched.jsonl \
        --prompts test_mismatched=data/prompts/0shot/mnli/test_mismatched.jsonl \
        --output results/test_predictions/sft/smollm2-135m/seed1/mnli.jsonl

Generation is the evaluation's (``evaluation.*``: batching, greedy unless ``do_sample``); the
output holds every completion with its parse (``prediction``: label id, score, or null when the
answer is invalid; scripts/make_submission.py gives those the training majority label).
"""

from __future__ import annotations

import dataclasses
import logging
import os

from gluerl import cli
from gluerl.budgets import check_token_budget
from gluerl.evaluation import evaluate_split
from gluerl.io import write_jsonl
from gluerl.models import load_model, load_tokenizer
from gluerl.prompts import read_split_prompts
from gluerl.tasks import get_task
from gluerl.tracking import flatten, start_run

log = logging.getLogger("gluerl.predict_test")


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--task", required=True, help="task name from the registry (with a submission block)")
    cli.add_model_args(p)
    p.add_argument("--prompts", action="append", required=True, metavar="SPLIT=FILE",
                   help="prompt file of each test split (repeat)")
    p.add_argument("--output", required=True, help="predictions JSONL (every split of the task)")
    args = p.parse_args(argv)
    cfg = cli.load(args, "predict_test", model=args.model)
    task = get_task(args.task, cfg["task_files"])
    files, records = read_split_prompts(args.prompts, task.test_splits, task.name, "submission test splits")
    params = {**flatten(cfg["evaluation"], "evaluation"), "model": args.model, "task": task.name,
              "method": args.method, "seed": args.seed, "adapter": args.adapter or "",
              "snakemake_rule": os.environ.get("GLUERL_RULE", "")}
    with start_run(cfg["mlflow"], f"predict-{args.method}-{args.model}-{task.name}-seed{args.seed}", "predict_test",
                   params) as tracker:
        spec = cfg["models"].get(args.model, {})
        trust = spec.get("trust_remote_code", False)
        tok = load_tokenizer(args.model_dir, trust)
        check_token_budget("evaluation.max_new_tokens", cfg["evaluation"]["max_new_tokens"], [task], tok)
        model = load_model(args.model_dir, args.adapter, cfg["evaluation"]["dtype"], cfg["evaluation"]["device"], trust)
        unscored = dataclasses.replace(task, labelled=False)  # test labels are hidden: no metrics
        predictions = []
        for split, rows in records.items():
            res, preds = evaluate_split(model, tok, unscored, split, rows, cfg["evaluation"],
                                        cfg["prompting"]["chat_template"], args.seed)
            for r in preds:
                r.pop("correct", None)
            predictions += preds
            log.info("%s %s[%s]: %d rows, invalid rate %.4f", args.method, task.name, split, res["n"], res["invalid_rate"])
            tracker.log_metrics({f"{split}.invalid_rate": res["invalid_rate"], f"{split}.n": res["n"]})
        write_jsonl(args.output, predictions)
        tracker.log_artifact(args.output)


if __name__ == "__main__":
    cli.run(main)
