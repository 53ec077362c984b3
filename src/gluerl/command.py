"""The ``gluerl`` command: ``gluerl tasks`` lists the task registry, ``gluerl eval`` scores a model
folder on some tasks as lm-evaluation-harness's ``lm_eval`` does (:mod:`gluerl.harness`),
``gluerl --version``.

    gluerl tasks
    gluerl eval --model results/models/smollm2-135m --tasks sst2,cola --num-fewshot 5 --limit 100
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    """``gluerl tasks``: list the task registry; ``gluerl eval``: score a model on some tasks (``gluerl.harness``)."""
    from . import __version__, harness
    from .cli import run

    p = argparse.ArgumentParser(prog="gluerl", description="gluerl utilities")
    p.add_argument("--version", action="version", version=f"gluerl {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tasks", help="list the registered tasks")
    t.add_argument("--task-file", action="append", default=[], help="extra task declaration file")
    e = sub.add_parser("eval", help="evaluate a model folder on some tasks (lm-evaluation-harness style)",
                       description=harness.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_arguments(e)
    args = p.parse_args(argv)
    if args.cmd == "eval":
        run(lambda _argv: harness.main(args))
        return
    if args.cmd == "tasks":
        from .tasks import registry

        for name, task in registry(args.task_file).items():
            kind = "regression" if task.is_regression else "/".join(task.labels.values())
            print(f"{name:13s} {task.benchmark:9s} {','.join(task.metrics):20s} {kind}")


if __name__ == "__main__":
    main()
