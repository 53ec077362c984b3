"""Download one split of a task (hub or local folder), check every row, subsample, write JSONL.

    python scripts/download_dataset.py --config config/config.yaml --task rte --split train \
        --output data/raw/rte/train.jsonl

With ``data.source: local`` the rows come from ``{data.local_dir}/{task}/{split}.jsonl``.
"""

from __future__ import annotations

from gluerl import cli
from gluerl.data import load_split
from gluerl.io import write_jsonl
from gluerl.tasks import get_task


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--task", required=True, help="task name from the registry")
    p.add_argument("--split", required=True, help="split name (train, validation, ...)")
    p.add_argument("--output", required=True, help="JSONL file to write")
    args = p.parse_args(argv)
    cfg = cli.load(args, "download_dataset")
    task = get_task(args.task, cfg["task_files"])
    write_jsonl(args.output, load_split(task, args.split, cfg["data"]))


if __name__ == "__main__":
    cli.run(main)
