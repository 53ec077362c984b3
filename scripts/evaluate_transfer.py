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

from gluerl import cli
from gluerl.evaluation import evaluate_transfer


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--target", required=True, help="name of an entry of the config's transfer list")
    cli.add_model_args(p, "LoRA adapter folder of the source task (or the multi-task one)")
    p.add_argument("--prompts", required=True, help="prompt file of the target's rows")
    p.add_argument("--output", required=True, help="result JSON")
    p.add_argument("--predictions", required=True, help="per-example predictions JSONL")
    args = p.parse_args(argv)
    cfg = cli.load(args, "evaluate_transfer", model=args.model, target=args.target)
    evaluate_transfer(cfg, args.target, args.prompts, args.model_dir, args.output, args.predictions,
                      method=args.method, model=args.model, seed=args.seed, adapter=args.adapter)


if __name__ == "__main__":
    cli.run(main)
