"""Format a split's rows as prompts in the paper's format (zero-shot or k-shot).

    python scripts/format_prompts.py --config config/config.yaml --task rte --template 5shot-seed1 \
        --input data/raw/rte/validation.jsonl --train data/raw/rte/train.jsonl \
        --output data/prompts/5shot-seed1/rte/validation.jsonl

``--template`` is ``0shot`` or ``<k>shot-seed<s>``: k demonstrations drawn once with seed s from
``--train`` (label-balanced when ``prompting.balanced``), shared by every prompt of the file.
"""

from __future__ import annotations

from gluerl import cli
from gluerl.errors import ConfigError
from gluerl.io import read_jsonl, write_jsonl
from gluerl.prompts import draw_demonstrations, format_split, parse_template
from gluerl.tasks import get_task


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--task", required=True)
    p.add_argument("--template", required=True, help="0shot or <k>shot-seed<s>")
    p.add_argument("--input", required=True, help="raw split JSONL")
    p.add_argument("--train", help="raw train JSONL (k-shot demonstrations)")
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    cfg = cli.load(args)
    task = get_task(args.task, cfg["task_files"])
    shots, seed = parse_template(args.template)
    demos = []
    if shots:
        if not args.train:
            raise ConfigError(f"template {args.template} needs --train for its demonstrations")
        demos = draw_demonstrations(read_jsonl(args.train), task, shots, seed, cfg["prompting"]["balanced"])
    write_jsonl(args.output, format_split(read_jsonl(args.input), task, demos))


if __name__ == "__main__":
    cli.run(main)
