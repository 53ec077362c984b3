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

from gluerl import cli
from gluerl.evaluation import predict_test


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--task", required=True, help="task name from the registry (with a submission block)")
    cli.add_model_args(p)
    p.add_argument("--prompts", action="append", required=True, metavar="SPLIT=FILE",
                   help="prompt file of each test split (repeat)")
    p.add_argument("--output", required=True, help="predictions JSONL (every split of the task)")
    args = p.parse_args(argv)
    cfg = cli.load(args, "predict_test", model=args.model)
    predict_test(cfg, args.task, args.prompts, args.model_dir, args.output, method=args.method, model=args.model,
                 seed=args.seed, adapter=args.adapter)


if __name__ == "__main__":
    cli.run(main)
