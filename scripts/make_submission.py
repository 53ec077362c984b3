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

import logging
from pathlib import Path

from gluerl import cli
from gluerl.data import max_rows
from gluerl.errors import ConfigError
from gluerl.io import read_jsonl, write_json
from gluerl.submissions import build_files, expected_files, zip_bytes
from gluerl.tasks import get_task, registry

log = logging.getLogger("gluerl.make_submission")


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
    preds_files, train_files = pairs(args.predictions, "--predictions"), pairs(args.train, "--train")
    missing_train = set(preds_files) - set(train_files)
    if missing_train:
        raise ConfigError(f"--train is missing for task(s) {sorted(missing_train)}")
    tasks = [get_task(t, cfg["task_files"]) for t in preds_files]
    wrong = [t.name for t in tasks if t.benchmark != args.benchmark]
    if wrong:
        raise ConfigError(f"task(s) {wrong} are not in benchmark {args.benchmark!r}")
    files, report = build_files(tasks, {t: read_jsonl(f) for t, f in preds_files.items()},
                                {t: read_jsonl(f) for t, f in train_files.items()})
    expected = expected_files(registry(cfg["task_files"]).values(), args.benchmark)
    order = {f: i for i, f in enumerate(expected)}
    files = dict(sorted(files.items(), key=lambda kv: order.get(kv[0], len(order))))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(zip_bytes(files))
    tmp.replace(out)
    subsampled = [f"{t.name}/{s}" for t in tasks for s in t.test_splits if max_rows(t, s, cfg["data"]) is not None]
    missing = [f for f in expected if f not in files]
    manifest = {"benchmark": args.benchmark, "archive": str(out), "files": report, "missing_files": missing,
                "subsampled_splits": subsampled, "complete": not missing and not subsampled,
                "fallbacks": sum(r["fallbacks"] for r in report.values()),
                "rows": sum(r["rows"] for r in report.values())}
    write_json(args.manifest, manifest)
    for name, r in report.items():
        log.info("%s: %d rows, %d invalid answers given the fallback %r", name, r["rows"], r["fallbacks"],
                 r["fallback_label"])
    if missing:
        log.warning("the %s server expects %s too; this archive lacks them", args.benchmark, ", ".join(missing))
    if subsampled:
        log.warning("subsampled test splits (data.max_samples): %s; the server rejects incomplete files",
                    ", ".join(subsampled))


if __name__ == "__main__":
    cli.run(main)
