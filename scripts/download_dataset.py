"""Download one split of a task (hub or local folder), check every row, subsample, write JSONL.

    python scripts/download_dataset.py --config config/config.yaml --task rte --split train \
        --output data/raw/rte/train.jsonl

With ``data.source: local`` the rows come from ``{data.local_dir}/{task}/{split}.jsonl``.
Beside the output, ``train.provenance.json`` records the source, dataset, revision, caps and
whether rows were subsampled (read back into every evaluation record, ``gluerl.records``).
"""

from __future__ import annotations

from gluerl import cli
from gluerl.data import load_split_with_provenance
from gluerl.io import write_jsonl
from gluerl.records import environment, write_provenance
from gluerl.tasks import get_task


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--task", required=True, help="task name from the registry")
    p.add_argument("--split", required=True, help="split name (train, validation, ...)")
    p.add_argument("--output", required=True, help="JSONL file to write")
    args = p.parse_args(argv)
    cfg = cli.load(args, "download_dataset")
    task = get_task(args.task, cfg["task_files"])
    rows, provenance = load_split_with_provenance(task, args.split, cfg["data"])
    write_jsonl(args.output, rows)
    env = environment()
    write_provenance(args.output, {"raw": provenance, "written": {"date": env["date"], "git_commit": env["git_commit"],
                                                                   "versions": env["versions"]}})


if __name__ == "__main__":
    cli.run(main)
