"""Download one split of a task (hub or local folder), check every row, subsample, write JSONL.

    python scripts/download_dataset.py --config config/config.yaml --task rte --split train \
        --output data/raw/rte/train.jsonl

With ``data.source: local`` the rows come from ``{data.local_dir}/{task}/{split}.jsonl``.
Beside the output, ``train.provenance.json`` records the source, dataset, revision, caps and
whether rows were subsampled (read back into every evaluation record, ``gluerl.records``).
"""

from __future__ import annotations

from gluerl import cli
from gluerl.data import download_dataset


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--task", required=True, help="task name from the registry")
    p.add_argument("--split", required=True, help="split name (train, validation, ...)")
    p.add_argument("--output", required=True, help="JSONL file to write")
    args = p.parse_args(argv)
    cfg = cli.load(args, "download_dataset")
    download_dataset(cfg, args.task, args.split, args.output)


if __name__ == "__main__":
    cli.run(main)
