"""Download (or read) a transfer target's dataset and map it to its source task's schema.

    python scripts/download_transfer.py --config config/transfer-example.yaml --target imdb \
        --output data/transfer/imdb.jsonl

The target is an entry of the config's ``transfer`` list: its dataset (hub id, file or folder),
field mapping and label mapping. Rows come out with the source task's fields, ``label`` (the
source label id), ``idx`` and ``target_label`` (the dataset's own value), subsampled to the
entry's ``max_samples``.
"""

from __future__ import annotations

from gluerl import cli
from gluerl.transfer import download_transfer


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--target", required=True, help="name of an entry of the config's transfer list")
    p.add_argument("--output", required=True, help="JSONL file to write")
    args = p.parse_args(argv)
    cfg = cli.load(args, "download_transfer", target=args.target)
    download_transfer(cfg, args.target, args.output)


if __name__ == "__main__":
    cli.run(main)
