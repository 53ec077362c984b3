"""Evaluate a model (optionally with a LoRA adapter) on a task's evaluation splits.

    python scripts/evaluate.py --config config/config.yaml --task mnli --method zeroshot \
        --model smollm2-135m --seed 1 --model-dir results/models/smollm2-135m \
        --prompts validation_matched=data/prompts/0shot/mnli/validation_matched.jsonl \
        --prompts validation_mismatched=data/prompts/0shot/mnli/validation_mismatched.jsonl \
        --output results/eval/zeroshot/smollm2-135m/seed1/mnli.json \
        --predictions results/eval/zeroshot/smollm2-135m/seed1/mnli.predictions.jsonl

The model is loaded once; every split is generated in batches (greedy unless
``evaluation.do_sample``), parsed and scored. The JSON holds per-column metrics, the score, the
invalid rate, the number of examples and the speed, and what made them (``gluerl.records``):
date, git commit, package versions, number of shots, and per column the prompt file's hash and the
data's source, dataset, revision, caps and subsample flag. The predictions file holds every
completion with the SHA-256 of its prompt.
"""

from __future__ import annotations

import os

from gluerl import cli
from gluerl.evaluation import evaluate_task
from gluerl.io import write_json, write_jsonl
from gluerl.prompts import read_split_prompts
from gluerl.records import data_params
from gluerl.tasks import get_task
from gluerl.tracking import eval_metrics, flatten, start_run, training_run_of


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--task", required=True)
    cli.add_model_args(p)
    p.add_argument("--prompts", action="append", required=True, metavar="SPLIT=FILE", help="prompt file per evaluation split")
    p.add_argument("--output", required=True, help="result JSON")
    p.add_argument("--predictions", required=True, help="per-example predictions JSONL")
    args = p.parse_args(argv)
    cfg = cli.load(args, "evaluate_model", model=args.model)
    task = get_task(args.task, cfg["task_files"])
    files, records = read_split_prompts(args.prompts, task.eval_splits, task.name, "evaluation splits")
    spec = cfg["models"].get(args.model, {})
    ev = cfg["evaluation"]
    params = {**flatten(ev, "evaluation"), **flatten(cfg["prompting"], "prompting"), "model": args.model,
              "task": task.name, "method": args.method, "seed": args.seed, "adapter": args.adapter or "",
              "snakemake_rule": os.environ.get("GLUERL_RULE", ""),
              **data_params({task.eval_splits[s]: f for s, f in files.items()})}
    trained_by = training_run_of(args.adapter)
    with start_run(cfg["mlflow"], f"eval-{args.method}-{args.model}-{task.name}-seed{args.seed}", "evaluate",
                   params, tags={"gluerl.training_run_id": trained_by} if trained_by else None) as tracker:
        tracker.log_datasets({f"{task.eval_splits[s]}-{s}": f for s, f in files.items()}, "evaluation")
        evaluate(args, cfg, task, records, files, spec, ev, tracker)


def evaluate(args, cfg, task, records, files, spec, ev, tracker):
    result, predictions = evaluate_task(args.model_dir, task, records, files, ev, cfg["prompting"]["chat_template"],
                                        method=args.method, model=args.model, seed=args.seed, adapter=args.adapter,
                                        trust_remote_code=spec.get("trust_remote_code", False))
    write_jsonl(args.predictions, predictions)
    for col, res in result["columns"].items():
        tracker.log_metrics(eval_metrics(col, res), grouped=False)
    write_json(args.output, result)
    tracker.log_artifact(args.output)
    tracker.log_artifact(args.predictions)


if __name__ == "__main__":
    cli.run(main)
