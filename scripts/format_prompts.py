"""Format a split's rows as prompts in the paper's format (zero-shot or k-shot).

    python scripts/format_prompts.py --config config/config.yaml --task rte --template 5shot-seed1 \
        --input data/raw/rte/validation.jsonl --train data/raw/rte/train.jsonl \
        --output data/prompts/5shot-seed1/rte/validation.jsonl

``--template`` is ``0shot`` or ``<k>shot-seed<s>``: k demonstrations drawn once with seed s from
``--train`` (label-balanced when ``prompting.balanced``), shared by every prompt of the file.
Beside the output, ``validation.provenance.json`` carries the raw split's provenance forward
(source, dataset, revision, caps) with the template and the demonstrations' idx and source.
"""

from __future__ import annotations

from pathlib import Path

from gluerl import cli
from gluerl.data import check_rows
from gluerl.errors import ConfigError
from gluerl.io import read_jsonl, write_jsonl
from gluerl.prompts import draw_demonstrations, format_split, parse_template
from gluerl.records import read_provenance, write_provenance
from gluerl.tasks import get_task


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--task", required=True)
    p.add_argument("--template", required=True, help="0shot or <k>shot-seed<s>")
    p.add_argument("--input", required=True, help="raw split JSONL")
    p.add_argument("--train", help="raw train JSONL (k-shot demonstrations)")
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    cfg = cli.load(args, "format_prompts", template=args.template)
    task = get_task(args.task, cfg["task_files"])
    shots, seed = parse_template(args.template)
    demos = []
    if shots:
        if not args.train:
            raise ConfigError(f"template {args.template} needs --train for its demonstrations")
        demo_task = get_task(task.train_task, cfg["task_files"]) if task.train_task else task
        train = checked_rows(args.train, demo_task, demo_task.train_split)
        demos = draw_demonstrations(train, task, shots, seed, cfg["prompting"]["balanced"])
    rows = checked_rows(args.input, task, Path(args.input).stem)
    write_jsonl(args.output, format_split(rows, task, demos))
    raw = read_provenance(args.input)
    write_provenance(args.output, {
        "template": {"name": args.template, "num_fewshot": shots, "seed": seed,
                     "balanced": cfg["prompting"]["balanced"] if shots else None},
        "raw": raw["raw"] if raw else None,
        "demonstrations": {"idx": [d["idx"] for d in demos],
                           "data": (read_provenance(args.train) or {}).get("raw")} if shots else None,
    })


def checked_rows(path, task, split):
    """Rows of a raw split file, checked again (a file edited or copied by hand since the download step)."""
    rows = read_jsonl(path)
    check_rows(rows, task, split, path)
    return rows


if __name__ == "__main__":
    cli.run(main)
