"""Our evaluator against lm-evaluation-harness's ``hf`` backend: same model, prompts and examples.

    /work/lmeval-venv/bin/python benchmarks/eval_vs_lm_eval.py \
        --model-dir results/models/smollm2-135m --data-dir ../shared/glue \
        --limit sst2=200 --limit rte=277 --shots 0 5 --threads 1

Runs in one process that imports both gluerl and lm_eval (a virtual environment with
``lm-eval==0.4.13`` on top of the project's packages: ``python -m venv --system-site-packages
VENV && VENV/bin/pip install lm-eval==0.4.13``); ``--help`` and the task export work without
lm_eval. Three rows per task and number of shots, on the first ``--limit`` validation rows:

- gluerl: ``gluerl.evaluation.evaluate_split`` with the ``evaluation`` section of ``--config``
  (batched, length-sorted, shared-prefix KV cache and cascade attention, greedy, stop at
  ``</Judgement>``), the batch size set to ``--batch-size``.
- lm-eval generate_until: lm-eval's ``evaluate`` on a local task YAML (``output_type:
  generate_until``) whose documents are our prompts, rendered by gluerl's own prompt code with
  the model's chat template (k-shot: the workflow's ``<k>shot-seed<s>`` demonstrations as earlier
  chat turns, inside the prompt, so lm-eval's own ``num_fewshot`` is 0); the same stop string, the
  same ``max_gen_toks`` as our ``max_new_tokens``, greedy, the same batch size. Its answers are
  parsed by gluerl's parser, so both sides are scored the same way; lm-eval's own exact_match
  against the label word is reported too.
- lm-eval multiple_choice: lm-eval's built-in GLUE task (``lm_eval/tasks/glue/<task>/
  default.yaml``, its own prompt and label words, log-likelihood of each choice) included by a
  local YAML that points it at the local files; k-shot: lm-eval draws k demonstrations from the
  local train split with its own sampler and seed.

Timing excludes model loading on every side (reported separately: our ``load_model`` +
``load_tokenizer`` and lm-eval's ``HFLM(...)`` each load the model folder once) and lm-eval's
task setup (indexing the YAMLs, loading the local JSON files with ``datasets``). What is timed:
our ``evaluate_split`` (render, tokenise, generate, parse, metrics with bootstrap intervals) and
lm-eval's ``evaluate`` (build requests, run the model, filter, metrics); in brackets the time in
the model calls alone (our ``generate``, lm-eval's ``generate_until`` / ``loglikelihood``). The
examples are cut into ``--chunks`` length bands and the rows run chunk by chunk in alternating
order, so a change of the shared machine's load hits all of them. Both sides use the same torch
threads (``--threads``), in the same process, one after the other.

Agreement: the share of examples where the two generate_until sides' parsed answers are equal
(invalid counting as an answer), and where their completions are identical (ours without the stop
string, which lm-eval removes). The check that lm-eval saw exactly our prompt text is printed too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's gluerl

from gluerl.io import write_jsonl  # noqa: E402
from gluerl.parsing import CLOSE_TAG as STOP  # noqa: E402

TARGET = 3.0  # gluerl ex/s over lm-eval generate_until ex/s


# -- task export (no lm_eval needed) ----------------------------------------------------------------

def generate_task_config(name: str, data_file: Path, max_gen_toks: int, stop: str = STOP) -> dict:
    """lm-eval task config: our rendered prompts (column ``prompt``) continued with ``generate_until``."""
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {"validation": str(data_file)}},
        "output_type": "generate_until",
        "validation_split": "validation",
        "doc_to_text": "prompt",      # a column name: the text as it is, no template
        "doc_to_target": "target",    # the label word
        "target_delimiter": "",
        "num_fewshot": 0,             # k-shot demonstrations are chat turns inside the prompt
        "generation_kwargs": {"until": [stop], "max_gen_toks": max_gen_toks, "do_sample": False},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def choice_task_config(name: str, builtin_yaml: Path, validation_file: Path, train_file: Path | None,
                       num_fewshot: int) -> dict:
    """lm-eval's built-in GLUE task (``include``d as it is) pointed at local JSON files."""
    files = {"validation": str(validation_file)}
    if train_file is not None:
        files["train"] = str(train_file)
    extra = {} if train_file is not None else {"training_split": None}  # 0-shot: no train file to load
    return {
        "include": str(builtin_yaml),
        "task": name,
        "tag": [],
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": files},
        "num_fewshot": num_fewshot,
        **extra,
    }


def generate_docs(rows, records, prompts, task) -> list[dict]:
    """Documents of the generate_until task: the GLUE row's fields plus prompt and label word."""
    docs = []
    for row, rec, prompt in zip(rows, records, prompts):
        docs.append({**{k: row[k] for k in (*task.fields, "idx")}, "label": rec["label"], "prompt": prompt,
                     "target": task.label_word(rec["label"])})
    return docs


def write_task(folder: Path, config: dict, docs: list[dict] | None = None) -> Path:
    """Write ``config`` as ``<task>.yaml`` (and ``docs`` as the JSON lines file it names) under ``folder``."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    if docs is not None:
        write_jsonl(Path(config["dataset_kwargs"]["data_files"]["validation"]), docs)
    out = folder / f"{config['task']}.yaml"
    out.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return out


def bands(n_items: int, lengths, n: int) -> list[list[int]]:
    """``n`` chunks of item indices, each a band of the length order (longest first), the split's
    order inside a band."""
    order = sorted(range(n_items), key=lambda i: -lengths[i])
    size = -(-n_items // max(1, min(n, n_items)))
    return [sorted(order[b : b + size]) for b in range(0, n_items, size)]


# -- the three sides ---------------------------------------------------------------------------------

class Timed:
    """Wraps an lm-eval LM's request method on the instance and adds up its seconds."""

    def __init__(self, lm, method: str):
        self.seconds, orig = 0.0, getattr(lm, method)

        def run(*a, **k):
            t = time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                self.seconds += time.perf_counter() - t

        setattr(lm, method, run)


def run_ours(model, tok, task, records, ev, chat, seed):
    from gluerl.evaluation import evaluate_split

    t0 = time.perf_counter()
    res, rows = evaluate_split(model, tok, task, "validation", records, ev, chat, seed, progress=False)
    return {"seconds": time.perf_counter() - t0, "model_seconds": res["seconds"],
            "completions": [r["completion"] for r in rows], "predictions": [r["prediction"] for r in rows]}


def run_lm_eval(lm, loaded, name, method, timers):
    from lm_eval.evaluator import evaluate

    before = timers[method].seconds
    t0 = time.perf_counter()
    out = evaluate(lm=lm, task_dict=loaded, log_samples=True, verbosity="WARNING")
    seconds = time.perf_counter() - t0
    samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
    return {"seconds": seconds, "model_seconds": timers[method].seconds - before, "samples": samples,
            "results": out["results"][name]}


def sample_context(s) -> str:
    """The context string lm-eval sent to the model for one sample (its log format varies)."""
    args = s["arguments"]
    if isinstance(args, dict):
        args = list(args.values())
    first = args[0]
    if isinstance(first, dict):
        first = list(first.values())
    return first[0]


def choice_prediction(s) -> int:
    """The index of the choice with the highest log-likelihood (lm-eval's ``acc`` picks the same)."""
    lls = [r[0] if isinstance(r, (list, tuple)) else r for r in s["filtered_resps"]]
    return max(range(len(lls)), key=lambda i: lls[i])


def first_response(s) -> str:
    r = s["filtered_resps"]
    while isinstance(r, (list, tuple)):
        r = r[0]
    return r


# -- main --------------------------------------------------------------------------------------------

def parse_limits(specs, tasks) -> dict:
    limits = {"sst2": 200, "rte": None}
    for spec in specs or []:
        if "=" in spec:
            k, v = spec.split("=", 1)
            limits[k] = None if v in ("all", "") else int(v)
        else:
            limits = {t: None if spec == "all" else int(spec) for t in tasks}
    return {t: limits.get(t) for t in tasks}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, required=True, help="prepared HF model folder (config, weights, tokenizer)")
    p.add_argument("--data-dir", type=Path, required=True, help="local GLUE folder ({task}/{split}.jsonl)")
    p.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml",
                   help="experiment config whose evaluation/prompting sections our side uses (default: %(default)s)")
    p.add_argument("--tasks", nargs="+", default=["sst2", "rte"], help="GLUE tasks (default: %(default)s)")
    p.add_argument("--limit", action="append", metavar="TASK=N",
                   help="first N validation rows of TASK (repeatable; N or 'all'; a bare N sets every task); "
                        "default sst2=200, rte=all (277)")
    p.add_argument("--shots", type=int, nargs="+", default=[0, 5], help="0 and/or k (default: %(default)s)")
    p.add_argument("--demo-seed", type=int, default=1, help="seed of our k-shot demonstrations (the prompt file's)")
    p.add_argument("--max-new-tokens", type=int,
                   help="max_new_tokens of ours and max_gen_toks of lm-eval (default: the config's, raised to the "
                        "longest answer of --tasks, e.g. RTE's not_entailment</Judgement>, 10 SmolLM2 tokens)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size of every side (default: %(default)s)")
    p.add_argument("--chunks", type=int, default=2, help="length bands the rows alternate over (default: %(default)s)")
    p.add_argument("--rows", nargs="+", default=["gluerl", "generate", "choice"],
                   choices=["gluerl", "generate", "choice"], help="which rows to run (default: all three)")
    p.add_argument("--threads", type=int, default=1, help="torch threads, the same for all sides (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", type=Path, help="folder for the exported task YAMLs and JSON files (default: a temp dir)")
    p.add_argument("--export-only", action="store_true", help="write the task YAMLs and data files, then stop")
    p.add_argument("--output", type=Path, help="JSON file for the full results (per-example answers included)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(k, "1")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import tempfile

    work = args.workdir or Path(tempfile.mkdtemp(prefix="gluerl-lmeval-"))
    os.environ.setdefault("HF_DATASETS_CACHE", str(work / "hf-datasets"))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    import torch
    import transformers

    from gluerl.config import load_config
    from gluerl.data import load_split
    from gluerl.models import load_model, load_tokenizer
    from gluerl.prompts import kshot_records, render_prompt
    from gluerl.tasks import get_task

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    ev = {**cfg["evaluation"], "batch_size": args.batch_size}
    chat = cfg["prompting"]["chat_template"]
    data = {"source": "local", "local_dir": str(args.data_dir), "max_samples": {}}
    limits = parse_limits(args.limit, args.tasks)

    t0 = time.perf_counter()
    tok = load_tokenizer(args.model_dir)
    model = load_model(args.model_dir, dtype=ev["dtype"], device=ev["device"])
    load_ours = time.perf_counter() - t0
    if args.max_new_tokens:
        ev["max_new_tokens"] = args.max_new_tokens
    else:  # the workflow refuses a budget below the longest answer (gluerl.budgets); so does this
        from gluerl.budgets import longest_answer

        need = longest_answer([get_task(t, cfg["task_files"]) for t in args.tasks], tok)[2]
        ev["max_new_tokens"] = max(ev["max_new_tokens"], need)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")

    builtin = None
    if not args.export_only:
        import lm_eval
        builtin = Path(lm_eval.__file__).parent / "tasks" / "glue"

    # export every (task, shots, chunk) as lm-eval task files
    plan = []  # dicts: task, shots, chunk, records, prompts, gen/choice task names
    for tname in args.tasks:
        task = get_task(tname, cfg["task_files"])
        rows = load_split(task, "validation", data)
        total = len(rows)
        rows = rows[: limits[tname]] if limits[tname] else rows
        train_file = args.data_dir / tname / "train.jsonl"
        for shots in args.shots:
            records = kshot_records(rows, task, shots, lambda: load_split(task, task.train_split, data),
                                    args.demo_seed, cfg["prompting"]["balanced"])
            prompts = [render_prompt(r["messages"], tok, chat) for r in records]
            lengths = [len(x) for x in tok(prompts, add_special_tokens=False)["input_ids"]]
            for c, idx in enumerate(bands(len(rows), lengths, args.chunks)):
                tag = f"{tname}_{shots}shot_c{c}"
                gen = generate_task_config(f"gluerl_gen_{tag}", work / "data" / f"gen_{tag}.jsonl",
                                           ev["max_new_tokens"])
                write_task(work / "tasks", gen, generate_docs([rows[i] for i in idx], [records[i] for i in idx],
                                                              [prompts[i] for i in idx], task))
                raw = write_jsonl(work / "data" / f"raw_{tag}.jsonl", [rows[i] for i in idx])
                choice = None
                if builtin is not None or args.export_only:
                    yml = (builtin or Path("lm_eval/tasks/glue")) / tname / "default.yaml"
                    choice = choice_task_config(f"gluerl_mc_{tag}", yml, raw, train_file if shots else None, shots)
                    write_task(work / "tasks", choice)
                plan.append({"task": task, "shots": shots, "chunk": c, "idx": idx, "total": total, "n": len(rows),
                             "records": [records[i] for i in idx], "prompts": [prompts[i] for i in idx],
                             "gen": gen["task"], "choice": choice["task"] if choice else None})
    print(f"task files in {work / 'tasks'}", flush=True)
    if args.export_only:
        return 0

    import importlib.metadata as md

    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    t0 = time.perf_counter()
    lm = HFLM(pretrained=str(args.model_dir), dtype=dtype, device=str(next(model.parameters()).device),
              batch_size=args.batch_size)
    load_lm = time.perf_counter() - t0
    # the same token ids on both sides (lm-eval's own encoding of a context vs ours)
    same_tokens = all(lm.tok_encode(item["prompts"][0]) == tok(item["prompts"][0], add_special_tokens=False)["input_ids"]
                      for item in plan)
    timers = {"generate_until": Timed(lm, "generate_until"), "loglikelihood": Timed(lm, "loglikelihood")}

    t0 = time.perf_counter()
    tm = TaskManager(include_path=str(work / "tasks"), include_defaults=False, verbosity="WARNING")
    loaded = {}
    for item in plan:
        for key in ("gen", "choice"):
            if item[key]:
                loaded[item[key]] = tm.load([item[key]])
    setup_lm = time.perf_counter() - t0

    # warm-up (first-call allocations), untimed: two examples through every side
    first = plan[0]
    run_ours(model, tok, first["task"], first["records"][:2], ev, chat, args.seed)
    warm = generate_task_config("gluerl_warm_gen", work / "data" / "warm_gen.jsonl", ev["max_new_tokens"])
    write_task(work / "tasks", warm, generate_docs([{**r, **{f: "warm-up" for f in first["task"].fields},
                                                     "idx": r["idx"]} for r in first["records"][:2]],
                                                   first["records"][:2], first["prompts"][:2], first["task"]))
    tm_warm = TaskManager(include_path=str(work / "tasks"), include_defaults=False, verbosity="WARNING")
    for name in ["gluerl_warm_gen"] + ([first["choice"]] if first["choice"] else []):
        from lm_eval.evaluator import evaluate
        evaluate(lm=lm, task_dict=tm_warm.load([name]), limit=2, log_samples=False, verbosity="WARNING")

    runs: dict = {}
    load0 = os.getloadavg()
    for k, item in enumerate(plan):
        key = f"{item['task'].name} {item['shots']}-shot"
        run = runs.setdefault(key, {"task": item["task"], "shots": item["shots"], "n": item["n"],
                                    "total": item["total"], "sides": {}, "load": [os.getloadavg()]})
        order = [r for r in ("gluerl", "generate", "choice") if r in args.rows]
        if k % 2:
            order.reverse()
        for side in order:
            if side == "gluerl":
                out = run_ours(model, tok, item["task"], item["records"], ev, chat, args.seed)
            elif side == "generate":
                out = run_lm_eval(lm, loaded[item["gen"]], item["gen"], "generate_until", timers)
            else:
                out = run_lm_eval(lm, loaded[item["choice"]], item["choice"], "loglikelihood", timers)
            out["items"] = item
            run["sides"].setdefault(side, []).append(out)
            print(f"  {key} chunk {item['chunk']} {side}: {len(item['records'])} ex in {out['seconds']:.1f} s "
                  f"(model calls {out['model_seconds']:.1f} s)", flush=True)
        run["load"].append(os.getloadavg())

    results = summarise(runs)
    versions = {"lm_eval": md.version("lm_eval"), "torch": torch.__version__,
                "transformers": transformers.__version__, "python": platform.python_version()}
    header = (f"{args.model_dir.name} ({dtype}, {results[0]['device'] if results else 'cpu'}), "
              f"{torch.get_num_threads()} torch thread(s), batch {args.batch_size}, greedy, "
              f"max {ev['max_new_tokens']} new tokens, stop {STOP!r}; {args.chunks} alternating length bands; "
              f"load s: gluerl {load_ours:.1f}, lm-eval HFLM {load_lm:.1f} (not timed); lm-eval task setup "
              f"{setup_lm:.1f} s (not timed); lm_eval {versions['lm_eval']}, torch {versions['torch']}, "
              f"transformers {versions['transformers']}; {platform.machine()} {os.cpu_count()} CPUs, "
              f"load average {load0[0]:.2f} -> {os.getloadavg()[0]:.2f}")
    print("\n" + header)
    print(table(results))
    checks = "; ".join(f"{r['run']} {r['generate']['prompts_identical']}/{r['n']}" for r in results if "generate" in r)
    print(f"\nlm-eval's generate_until contexts equal to our prompt texts: {checks}; "
          f"token ids of lm-eval's encoding equal to ours (first prompt of every chunk): {same_tokens}")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"header": header, "versions": versions, "load_seconds":
                                           {"gluerl": load_ours, "lm_eval": load_lm}, "lm_eval_task_setup_seconds":
                                           setup_lm, "same_token_ids": same_tokens, "evaluation": ev, "batch_size": args.batch_size,
                                           "threads": torch.get_num_threads(), "results": results},
                                          indent=2, default=str) + "\n")
    return 0


def summarise(runs: dict) -> list[dict]:
    """Per task and shots: each side's ex/s, accuracy, invalid rate; agreement of the two generators."""
    from gluerl.metrics import compute_metrics
    from gluerl.parsing import parse_answer

    out = []
    for key, run in runs.items():
        task = run["task"]
        row = {"run": key, "task": task.name, "shots": run["shots"], "n": run["n"],
               "split_size": run["total"], "load_average": [l[0] for l in run["load"]],
               "device": "cpu"}
        answers = {}
        for side, parts in run["sides"].items():
            gold, preds, comps, exact, prompt_ok = [], [], [], [], []
            for out_ in parts:
                recs = out_["items"]["records"]
                gold += [r["label"] for r in recs]
                if side == "gluerl":
                    preds += out_["predictions"]
                    comps += out_["completions"]
                else:
                    resps = [first_response(s) for s in out_["samples"]]
                    if side == "generate":
                        preds += [parse_answer(r, task) for r in resps]
                        comps += resps
                        exact += [s.get("exact_match") for s in out_["samples"]]
                        prompt_ok += [sample_context(s) == p for s, p in zip(out_["samples"], out_["items"]["prompts"])]
                    else:
                        preds += [choice_prediction(s) for s in out_["samples"]]
                        exact += [s.get("acc") for s in out_["samples"]]
            seconds = sum(o["seconds"] for o in parts)
            model_seconds = sum(o["model_seconds"] for o in parts)
            m = compute_metrics(gold, preds, task)
            stats = {"seconds": seconds, "model_seconds": model_seconds, "examples_per_second": len(gold) / seconds,
                     "accuracy": m["accuracy"], "invalid_rate": m["invalid_rate"], "predictions": preds,
                     "completions": comps}
            if exact:
                stats["lm_eval_metric"] = sum(map(float, exact)) / len(exact)
            if prompt_ok:
                stats["prompts_identical"] = sum(prompt_ok)
            row[side] = stats
            answers[side] = preds
        if "gluerl" in row and "generate" in row:
            a, b = row["gluerl"], row["generate"]
            row["ratio"] = a["examples_per_second"] / b["examples_per_second"]
            row["agreement"] = sum(x == y for x, y in zip(a["predictions"], b["predictions"])) / row["n"]
            row["identical_completions"] = sum(x.removesuffix(STOP) == y for x, y in zip(a["completions"],
                                                                                        b["completions"]))
            row["accuracy_difference"] = a["accuracy"] - b["accuracy"]
            # "equal accuracy": the two sides' accuracies within one example of each other
            row["pass"] = row["ratio"] >= TARGET and abs(row["accuracy_difference"]) <= 1 / row["n"] + 1e-9
        if "gluerl" in row and "choice" in row:
            row["ratio_choice"] = row["gluerl"]["examples_per_second"] / row["choice"]["examples_per_second"]
        out.append(row)
    return out


def table(results: list[dict]) -> str:
    """The Markdown table of :func:`summarise`'s rows."""
    def num(side, key):
        return f"{side[key]:.3f}" if side and key in side else "-"

    def rate(side):
        if not side:
            return "-"
        return f"{side['examples_per_second']:.3f} ({side['seconds']:.0f} s; model {side['model_seconds']:.0f} s)"

    def times(value):
        return "-" if value is None else f"{value:.2f}x"

    lines = ["| task | prompts | n | gluerl ex/s (s; model s) | lm-eval gen ex/s (s; model s) | gluerl / lm-eval gen | "
             "target | result | gluerl acc / invalid | lm-eval gen acc / invalid (its exact_match) | same answer | "
             "same text | lm-eval MC ex/s (s; model s) | gluerl / lm-eval MC | lm-eval MC acc | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        g, q, c = r.get("gluerl"), r.get("generate"), r.get("choice")
        n = str(r["n"]) if r["n"] == r["split_size"] else f"{r['n']} of {r['split_size']}"
        verdict = "-" if "pass" not in r else ("PASS" if r["pass"] else "FAIL")
        agree = f"{r['agreement']:.1%}" if "agreement" in r else "-"
        same = f"{r['identical_completions']}/{r['n']}" if "identical_completions" in r else "-"
        lines.append(f"| {r['task']} | {r['shots']}-shot | {n} | {rate(g)} | {rate(q)} | {times(r.get('ratio'))} | "
                     f"{TARGET:g}x | {verdict} | {num(g, 'accuracy')} / {num(g, 'invalid_rate')} | "
                     f"{num(q, 'accuracy')} / {num(q, 'invalid_rate')} ({num(q, 'lm_eval_metric')}) | {agree} | "
                     f"{same} | {rate(c)} | {times(r.get('ratio_choice'))} | {num(c, 'accuracy')} | "
                     f"{r['load_average'][0]:.1f}-{r['load_average'][-1]:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
