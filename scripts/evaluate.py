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

from gluerl import cli
from gluerl.evaluation import evaluate_model


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--task", required=True)
    cli.add_model_args(p)
    p.add_argument("--prompts", action="append", required=True, metavar="SPLIT=FILE", help="prompt file per evaluation split")
    p.add_argument("--output", required=True, help="result JSON")
    p.add_argument("--predictions", required=True, help="per-example predictions JSONL")
    args = p.parse_args(argv)
    cfg = cli.load(args, "evaluate_model", model=args.model)
    evaluate_model(cfg, args.task, args.prompts, args.model_dir, args.output, args.predictions, method=args.method,
                   model=args.model, seed=args.seed, adapter=args.adapter)


if __name__ == "__main__":
    cli.run(main)
