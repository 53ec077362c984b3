"""Draw the demo's embedded GLUE sample (``data.source: embedded``) from a local copy of GLUE.

    python scripts/make_demo_sample.py --source ../shared/glue --output src/gluerl/embedded

For each task and split, the rows of ``{source}/{task}/{split}.jsonl`` (in the hub schema of
``nyu-mll/glue``) are checked like any other data (``gluerl.data.load_split``), those shorter than
the task's ``--min-words`` are dropped, and ``--train`` / ``--validation`` rows are drawn with
``--seed`` and written in their source order, fields and ``idx`` unchanged, to
``{output}/{task}/{split}.jsonl``. Rerunning it with the same arguments on the same source rewrites
the same bytes (``tests/test_embedded_data.py`` checks that when the source folder is there).
The sample ships inside the package; ``src/gluerl/embedded/README.md`` names its sources and licences.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gluerl import cli
from gluerl.data import load_split, subsample
from gluerl.errors import ConfigError, DataError
from gluerl.io import write_jsonl
from gluerl.tasks import get_task

DEFAULT_TASKS = ["sst2", "cola"]
# SST-2 in the GLUE train split holds every phrase of each sentence ("author 's", labelled
# negative); the demo keeps rows of at least six words, closer to the official validation's
# full sentences. CoLA's short sentences ("John left.") are real test items: no minimum.
DEFAULT_MIN_WORDS = {"sst2": 6}


def parse_min_words(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        task, sep, n = item.partition("=")
        if not sep or not n.isdigit():
            raise ConfigError(f"--min-words {item!r}: use TASK=N (e.g. sst2=6)")
        out[task] = int(n)
    return out


def sample_split(source: Path, task_name: str, split: str, n: int, seed: int, min_words: int) -> list[dict]:
    """``n`` checked rows of one split (at least ``min_words`` words in every text field), source order."""
    task = get_task(task_name)
    rows = load_split(task, split, {"source": "local", "local_dir": str(source), "max_samples": {}})
    rows = [r for r in rows if all(len(r[f].split()) >= min_words for f in task.fields)]
    if len(rows) < n:
        raise DataError(f"only {len(rows)} rows of {task_name}/{split} have {min_words}+ words; asked for {n}", source)
    return subsample(rows, n, seed)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="../shared/glue", help="folder of {task}/{split}.jsonl (default ../shared/glue)")
    p.add_argument("--output", default="src/gluerl/embedded", help="folder to write (default src/gluerl/embedded)")
    p.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS, help=f"tasks (default {' '.join(DEFAULT_TASKS)})")
    p.add_argument("--train", type=int, default=400, help="train rows per task (default 400)")
    p.add_argument("--validation", type=int, default=300, help="validation rows per task (default 300)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--min-words", nargs="*", default=None, metavar="TASK=N",
                   help="drop rows with fewer words in a text field (default: sst2=6)")
    args = p.parse_args(argv)
    min_words = DEFAULT_MIN_WORDS if args.min_words is None else parse_min_words(args.min_words)
    for task in args.tasks:
        for split, n in (("train", args.train), ("validation", args.validation)):
            rows = sample_split(Path(args.source), task, split, n, args.seed, min_words.get(task, 0))
            path = write_jsonl(Path(args.output) / task / f"{split}.jsonl", rows)
            print(f"{path}: {len(rows)} rows")


if __name__ == "__main__":
    cli.run(main)
