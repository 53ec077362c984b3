r"""``gluerl eval``: score a model folder on some tasks from a shell, the way ``lm_eval`` does.

    gluerl eval --model results/models/smollm2-135m --tasks sst2,cola --num-fewshot 5 --limit 100 \
        --batch-size 16 --source embedded --output results/adhoc/smollm2-135m.json

For each task the command does in a work folder what the workflow's data, prompt and evaluation
stages do: it reads the task's evaluation splits (and for k-shot prompts its train split) from the
data source (``--source``, ``--data-dir`` or the config's ``data``), writes them with their
provenance, formats the prompts (k demonstrations drawn with ``--seed``, as the ``fewshot`` method
does), keeps the first ``--limit`` rows of each split (as lm-evaluation-harness's ``--limit``) and
scores them with :func:`gluerl.evaluation.evaluate_task`, the code behind ``scripts/evaluate.py``.
It prints a table in lm-evaluation-harness's layout (one row per metric, the bootstrap interval
where lm_eval prints a standard error) and, with ``--output``, writes the records (the same
fields as ``results/eval/.../{task}.json``, one per task under ``results``) with each task's
predictions beside them and the work folder (``<output>.data/``) that the records point to.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError
from .tasks import Task

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``gluerl eval``'s flags (lm-evaluation-harness's names where it has one)."""
    p.add_argument("--model", required=True, metavar="DIR", help="Hugging Face model folder (e.g. results/models/NAME)")
    p.add_argument("--adapter", metavar="DIR", help="LoRA adapter folder to apply (e.g. results/checkpoints/ppo/MODEL/TASKS/seed1)")
    p.add_argument("--tasks", required=True, help="comma-separated task names (gluerl tasks lists them)")
    p.add_argument("--num-fewshot", type=int, default=0, metavar="N", help="demonstrations per prompt (default 0)")
    p.add_argument("--limit", type=int, metavar="N", help="score only the first N rows of each evaluation split")
    p.add_argument("--batch-size", type=int, metavar="N", help="generation batch size (default: evaluation.batch_size)")
    p.add_argument("--device", help="cpu, cuda, cuda:0, ... (default: evaluation.device)")
    p.add_argument("--seed", type=int, default=1, help="seed of the demonstrations and of sampling (default 1)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--source", choices=("embedded", "local", "hub"), help="data source (default: data.source)")
    src.add_argument("--data-dir", metavar="DIR", help="a folder of {task}/{split}.jsonl (implies --source local)")
    p.add_argument("--output", metavar="FILE", help="results JSON (predictions and prompts are written beside it)")
    p.add_argument("--config", metavar="FILE", help="experiment config whose evaluation, prompting and data settings apply")
    p.add_argument("--trust-remote-code", action="store_true", help="run the model folder's own code")


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The config of the run: ``--config`` (defaults filled) with the flags over it."""
    from .config import deep_merge, load_config

    over: dict[str, Any] = {"evaluation": {}, "data": {}}
    if args.batch_size is not None:
        over["evaluation"]["batch_size"] = args.batch_size
    if args.device:
        over["evaluation"]["device"] = args.device
    if args.data_dir:
        over["data"].update(source="local", local_dir=args.data_dir)
    elif args.source:
        over["data"]["source"] = args.source
    cfg = load_config(args.config)
    cfg = deep_merge(cfg, over)
    if args.num_fewshot < 0:
        raise ConfigError(f"--num-fewshot must be 0 or more, not {args.num_fewshot}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be 1 or more, not {args.limit}")
    if cfg["data"]["source"] == "local" and not Path(cfg["data"]["local_dir"] or "").is_dir():
        raise ConfigError(f"data folder {cfg['data']['local_dir']} does not exist (--data-dir)")
    return cfg


def task_list(names: str, task_files: Sequence[str] = ()) -> list[Task]:
    from .tasks import get_task

    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted:
        raise ConfigError("--tasks names no task")
    return [get_task(n, task_files) for n in wanted]


def write_split(task: Task, split: str, data_cfg: dict, work: Path) -> Path:
    """A split from the data source as ``work/raw/{task}/{split}.jsonl`` with its provenance
    (what ``scripts/download_dataset.py`` writes)."""
    from .data import load_split_with_provenance
    from .io import write_jsonl
    from .records import environment, write_provenance

    rows, provenance = load_split_with_provenance(task, split, data_cfg)
    out = write_jsonl(work / "raw" / task.name / f"{split}.jsonl", rows)
    env = environment()
    write_provenance(out, {"raw": provenance, "written": {k: env[k] for k in ("date", "git_commit", "versions")}})
    return Path(out)


def prompt_files(task: Task, cfg: dict, num_fewshot: int, seed: int, work: Path) -> dict[str, Path]:
    """Split -> prompt file of each evaluation split, in ``work/prompts/{template}/{task}/`` with the
    provenance ``scripts/format_prompts.py`` writes (template, raw data, demonstrations)."""
    from .data import check_rows
    from .io import read_jsonl, write_jsonl
    from .prompts import draw_demonstrations, format_split, template_name
    from .records import read_provenance, write_provenance
    from .tasks import get_task

    template = template_name(num_fewshot, seed if num_fewshot else None)
    demos, train_file = [], None
    if num_fewshot:
        demo_task = get_task(task.train_task, cfg["task_files"]) if task.train_task else task
        train_file = write_split(demo_task, demo_task.train_split, cfg["data"], work)
        demos = draw_demonstrations(read_jsonl(train_file), task, num_fewshot, seed, cfg["prompting"]["balanced"])
    files = {}
    for split in task.eval_splits:
        raw_file = write_split(task, split, cfg["data"], work)
        rows = read_jsonl(raw_file)
        check_rows(rows, task, split, raw_file)
        out = Path(write_jsonl(work / "prompts" / template / task.name / f"{split}.jsonl", format_split(rows, task, demos)))
        write_provenance(out, {
            "template": {"name": template, "num_fewshot": num_fewshot, "seed": seed if num_fewshot else None,
                         "balanced": cfg["prompting"]["balanced"] if num_fewshot else None},
            "raw": read_provenance(raw_file)["raw"],
            "demonstrations": {"idx": [d["idx"] for d in demos],
                               "data": read_provenance(train_file)["raw"]} if num_fewshot else None,
        })
        files[split] = out
    return files


def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[Task]]:
    """Evaluate every task: (``{"results": {task: record}, "config": ..., versions...}``, the tasks);
    with ``--output`` the first is written there."""
    from .evaluation import evaluate_task
    from .io import write_json, write_jsonl
    from .prompts import read_prompt_file
    from .records import environment

    cfg = settings(args)
    tasks = task_list(args.tasks, cfg["task_files"])
    output = Path(args.output) if args.output else None
    with tempfile.TemporaryDirectory(prefix="gluerl-eval-") as tmp:
        work = output.with_name(output.name.removesuffix(".json") + ".data") if output else Path(tmp)
        results = {}
        for task in tasks:
            files = prompt_files(task, cfg, args.num_fewshot, args.seed, work)
            records = {s: read_prompt_file(f)[:args.limit] for s, f in files.items()}
            record, predictions = evaluate_task(
                args.model, task, records, files, cfg["evaluation"], cfg["prompting"]["chat_template"],
                method="fewshot" if args.num_fewshot else "zeroshot", model=Path(args.model).name, seed=args.seed,
                adapter=args.adapter, trust_remote_code=args.trust_remote_code, limit=args.limit)
            results[task.name] = record
            if output:
                record["predictions_file"] = str(write_jsonl(predictions_path(output, task.name), predictions))
    out = {"results": results, "config": {"model": args.model, "adapter": args.adapter,
                                          "tasks": [t.name for t in tasks], "num_fewshot": args.num_fewshot,
                                          "limit": args.limit, "seed": args.seed, "data": cfg["data"],
                                          "evaluation": cfg["evaluation"], "prompting": cfg["prompting"]},
           **environment()}
    if output:
        write_json(output, out)
    return out, tasks


def predictions_path(output: Path, task: str) -> Path:
    """``run.json`` -> ``run.sst2.predictions.jsonl``."""
    return output.with_name(f"{output.name.removesuffix('.json')}.{task}.predictions.jsonl")


def table(results: dict[str, dict[str, Any]], tasks: Sequence[Task]) -> str:
    """lm-evaluation-harness's results table: a row per task column and metric, the invalid rate
    last, the value with its bootstrap interval (lm_eval prints ``± stderr`` in that place)."""
    metrics_of = {t.name: list(t.metrics) for t in tasks}
    head = ["Tasks", "Column", "n-shot", "n", "Metric", "", "Value", "", "CI"]
    rows = []
    for name, rec in results.items():
        shots, label = rec.get("num_fewshot"), name
        for col, res in rec["columns"].items():
            metrics = [m for m in metrics_of[name] if m in res]
            level = round(100 * res.get("bootstrap", {}).get("confidence", 0.95))
            for m in metrics + ["invalid_rate"]:
                ci = res.get("ci", {}).get(m)
                rows.append([label, col, "" if shots is None else str(shots), str(res["n"]), m,
                             "↓" if m == "invalid_rate" else "↑", f"{res[m]:.4f}",
                             "" if ci is None else "±",
                             "" if ci is None else f"{level}% [{ci[0]:.4f}, {ci[1]:.4f}]"])
                label = ""  # like lm_eval: the task name once
    right = {2, 3, 6}
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]

    def line(cells):
        return "|" + "|".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))) + "|"

    rule = "|" + "|".join(("-" * (w - 1) + ":") if i in right else "-" * w for i, w in enumerate(widths)) + "|"
    return "\n".join([line(head), rule, *map(line, rows)])


def main(args: argparse.Namespace) -> None:
    out, tasks = run(args)
    src = out["config"]["data"]["source"]
    print(f"gluerl eval: model {args.model}{' + ' + args.adapter if args.adapter else ''}, data {src}, "
          f"num_fewshot {args.num_fewshot}, limit {args.limit}, batch_size {out['config']['evaluation']['batch_size']}")
    print(table(out["results"], tasks))
    if args.output:
        print(f"results: {args.output}")
