"""Write a leaderboard archive (GLUE: TSV files; SuperGLUE: JSON Lines) from test predictions.

    python scripts/make_submission.py --config config/config.yaml --benchmark glue \
        --predictions rte=results/test_predictions/sft/smollm2-135m/seed1/rte.jsonl \
        --train rte=data/raw/rte/train.jsonl \
        --output results/submissions/sft/smollm2-135m/seed1/glue.zip \
        --manifest results/submissions/sft/smollm2-135m/seed1/glue.json

File names and label strings come from each task's ``submission:`` block in the registry. An
invalid answer becomes the majority label of ``--train`` (a regression task: the mean score);
the manifest counts these fallbacks per file and lists the files the server expects that the
archive lacks and the splits that were subsampled (the server rejects incomplete submissions).
"""

from __future__ import annotations

from gluerl import cli
from gluerl.errors import ConfigError
from gluerl.submissions import make_submission


def pairs(values, flag):
    out = {}
    for v in values:
        if "=" not in v:
            raise ConfigError(f"{flag} {v!r}: expected TASK=FILE")
        k, path = v.split("=", 1)
        out[k] = path
    return out


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--benchmark", required=True, help="benchmark whose archive to write (glue, superglue, ...)")
    p.add_argument("--predictions", action="append", required=True, metavar="TASK=FILE",
                   help="test predictions of a task (scripts/predict_test.py); repeat per task")
    p.add_argument("--train", action="append", required=True, metavar="TASK=FILE",
                   help="raw training rows of a task (the fallback's majority label); repeat per task")
    p.add_argument("--output", required=True, help="zip archive to write")
    p.add_argument("--manifest", required=True, help="JSON report: rows, fallbacks, missing files")
    args = p.parse_args(argv)
    cfg = cli.load(args, "make_submission")
    make_submission(cfg, args.benchmark, pairs(args.predictions, "--predictions"), pairs(args.train, "--train"),
                    output=args.output, manifest=args.manifest)


if __name__ == "__main__":
    cli.run(main)
