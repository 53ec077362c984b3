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

from gluerl import cli
from gluerl.prompts import format_prompts


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--task", required=True)
    p.add_argument("--template", required=True, help="0shot or <k>shot-seed<s>")
    p.add_argument("--input", required=True, help="raw split JSONL")
    p.add_argument("--train", help="raw train JSONL (k-shot demonstrations)")
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    cfg = cli.load(args, "format_prompts", template=args.template)
    format_prompts(cfg, args.task, args.template, args.input, args.output, train=args.train)


if __name__ == "__main__":
    cli.run(main)
