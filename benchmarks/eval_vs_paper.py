"""Our evaluator against the paper's evaluation loop: same model, same prompts, same examples.

    python benchmarks/eval_vs_paper.py --model-dir results/models/smollm2-135m \
        --data-dir ../shared/glue --config config/config.yaml --limit 96

- The paper's loop (arXiv 2410.11020's evaluation, reproduced): for each prompt, one at a time,
  tokenise it, ``model.generate(do_sample=True, top_k=0, top_p=1.0, min_new_tokens=24,
  max_new_tokens=31)`` with no stop string, decode the new tokens, parse the answer.
- Ours: ``gluerl.evaluation.evaluate_split`` with the ``evaluation`` section of ``--config`` (the
  workflow's settings: batched, length-sorted, shared-prefix KV cache, stop at ``</Judgement>``).

Prompts come from our formatter (``format_split``; k-shot demonstrations drawn as the workflow's
``<k>shot-seed<s>`` prompt files draw them) rendered with the model's chat template; both sides get
the same first ``--limit`` examples of the split. The examples are cut into ``--chunks`` chunks
(bands of the prompt-length order, so ours batches them as it would batch the whole set) and the
two sides alternate chunk by chunk (who goes first alternates too), so a change in the shared
machine's load hits both. Ours computes its shared prefix once (reused across chunks while the
weights stay the same), as in the workflow.

The table shows examples per second of each side, their ratio against the target, and each
side's accuracy and invalid rate (a side cannot win by answering nothing), with the load average.
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

TARGETS = {0: 3.0, 5: 10.0}


def paper_loop(model, tok, task, records, chat_template: str, seed: int):
    """The paper's loop over ``records``: (seconds, completions, predictions)."""
    import torch

    from gluerl.parsing import parse_answer
    from gluerl.prompts import render_prompt

    device = next(model.parameters()).device
    torch.manual_seed(seed)
    completions = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for r in records:
            text = render_prompt(r["messages"], tok, chat_template)
            ids = tok(text, return_tensors="pt", add_special_tokens=False).to(device)
            out = model.generate(**ids, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                                 min_new_tokens=24, max_new_tokens=31, pad_token_id=tok.pad_token_id)
            completions.append(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    preds = [parse_answer(c, task) for c in completions]
    return time.perf_counter() - t0, completions, preds


def ours(model, tok, task, split, records, eval_cfg, chat_template: str, seed: int):
    """Our evaluator over ``records``: (seconds, completions, predictions)."""
    from gluerl.evaluation import evaluate_split

    t0 = time.perf_counter()
    _, rows = evaluate_split(model, tok, task, split, records, eval_cfg, chat_template, seed, progress=False)
    return time.perf_counter() - t0, [r["completion"] for r in rows], [r["prediction"] for r in rows]


def chunks(records, n, lengths):
    """``n`` chunks of the records, each a band of the length order (ours sorts by length inside its
    input; bands give its batches the padding they have on the whole split). Order inside a chunk
    is the split's."""
    order = sorted(range(len(records)), key=lambda i: -lengths[i])
    size = -(-len(records) // max(1, min(n, len(records))))
    return [[records[i] for i in sorted(order[b : b + size])] for b in range(0, len(order), size)]


def compare(model, tok, task, split, records, eval_cfg, chat_template, seed, n_chunks, label):
    from tqdm.auto import tqdm

    from gluerl.metrics import compute_metrics

    from gluerl.prompts import render_prompt

    sides = {"ours": [0.0, [], []], "paper": [0.0, [], []]}
    lengths = [len(tok(render_prompt(r["messages"], tok, chat_template), add_special_tokens=False)["input_ids"])
               for r in records]
    parts = chunks(records, n_chunks, lengths)
    bar = tqdm(total=2 * len(records), desc=label, unit="ex", mininterval=5.0)
    for i, part in enumerate(parts):
        order = ("ours", "paper") if i % 2 == 0 else ("paper", "ours")
        for side in order:
            if side == "ours":
                s, c, p = ours(model, tok, task, split, part, eval_cfg, chat_template, seed)
            else:
                s, c, p = paper_loop(model, tok, task, part, chat_template, seed + i)
            sides[side][0] += s
            sides[side][1] += c
            sides[side][2] += p
            bar.update(len(part))
    bar.close()
    gold = [r["label"] for part in parts for r in part]  # the order both sides ran in
    out = {}
    for side, (seconds, comps, preds) in sides.items():
        m = compute_metrics(gold, preds, task)
        out[side] = {"seconds": seconds, "examples_per_second": len(records) / seconds, "metrics": m,
                     "mean_completion_chars": sum(map(len, comps)) / len(comps), "examples": comps[:3]}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, required=True, help="prepared HF model folder")
    p.add_argument("--data-dir", type=Path, required=True, help="local GLUE folder ({task}/{split}.jsonl)")
    p.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "config" / "config.yaml",
                   help="experiment config whose evaluation/prompting sections our side uses")
    p.add_argument("--task", default="rte")
    p.add_argument("--split", default="validation")
    p.add_argument("--shots", type=int, nargs="+", default=[0, 5], help="0 and/or k (k-shot prompts)")
    p.add_argument("--demo-seed", type=int, default=1, help="seed of the k-shot demonstrations (the prompt file's)")
    p.add_argument("--seed", type=int, default=1, help="sampling seed")
    p.add_argument("--limit", type=int, help="first N examples of the split (default: all)")
    p.add_argument("--chunks", type=int, default=4, help="alternate the two sides over this many chunks")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--output", type=Path, help="JSON file for the full results")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    import torch
    import transformers

    from gluerl.config import load_config
    from gluerl.data import load_split
    from gluerl.models import load_model, load_tokenizer
    from gluerl.prompts import draw_demonstrations, format_split
    from gluerl.tasks import get_task

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    ev, chat = cfg["evaluation"], cfg["prompting"]["chat_template"]
    task = get_task(args.task, cfg["task_files"])
    data = {"source": "local", "local_dir": str(args.data_dir), "max_samples": {}}
    rows = load_split(task, args.split, data)
    total = len(rows)
    rows = rows[: args.limit] if args.limit else rows
    tok = load_tokenizer(args.model_dir)
    model = load_model(args.model_dir, dtype=ev["dtype"], device=ev["device"])
    # warm-up (first-call allocations and kernels), untimed
    warm = format_split(rows[:2], task)
    ours(model, tok, task, args.split, warm, ev, chat, args.seed)
    paper_loop(model, tok, task, warm[:1], chat, args.seed)

    results = {"task": task.name, "split": args.split, "examples": len(rows), "split_size": total,
               "model_dir": str(args.model_dir), "evaluation": ev, "chunks": args.chunks,
               "torch": torch.__version__, "transformers": transformers.__version__,
               "threads": torch.get_num_threads(), "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
               "device": str(next(model.parameters()).device), "dtype": str(next(model.parameters()).dtype),
               "runs": {}}
    for shots in args.shots:
        demos = []
        if shots:
            train = load_split(task, task.train_split, data)
            demos = draw_demonstrations(train, task, shots, args.demo_seed, cfg["prompting"]["balanced"])
        records = format_split(rows, task, demos)
        load0 = os.getloadavg()
        res = compare(model, tok, task, args.split, records, ev, chat, args.seed, args.chunks, f"{shots}-shot")
        res["load_average"] = [load0, os.getloadavg()]
        res["ratio"] = res["ours"]["examples_per_second"] / res["paper"]["examples_per_second"]
        res["target"] = TARGETS.get(shots)
        results["runs"][f"{shots}shot"] = res
        print(f"{shots}-shot: ours {res['ours']['examples_per_second']:.3f} ex/s, paper "
              f"{res['paper']['examples_per_second']:.3f} ex/s, x{res['ratio']:.2f}", flush=True)

    n = "all" if len(rows) == total else f"first {len(rows)} of"
    print(f"\n{task.name} {args.split}, {n} {total} examples, {args.model_dir.name} ({results['dtype']}, "
          f"{results['device']}, {results['threads']} threads); ours: batch {ev['batch_size']}, "
          f"max {ev['max_new_tokens']} new tokens, {'sampled' if ev['do_sample'] else 'greedy'}; "
          f"paper: one at a time, sampled, 24-31 new tokens, no stop; {args.chunks} alternating chunks")
    print("| prompts | ours ex/s | paper loop ex/s | ratio | target | result | ours acc / invalid | "
          "paper acc / invalid | load avg (start-end) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, res in results["runs"].items():
        o, q = res["ours"], res["paper"]
        acc = lambda s: f"{s['metrics'].get('accuracy', s['metrics']['score']):.3f} / {s['metrics']['invalid_rate']:.3f}"  # noqa: E731
        target = res["target"]
        verdict = "-" if target is None else ("PASS" if res["ratio"] >= target else "FAIL")
        print(f"| {name} | {o['examples_per_second']:.3f} | {q['examples_per_second']:.3f} | {res['ratio']:.2f}x | "
              f"{'-' if target is None else f'{target:g}x'} | {verdict} | {acc(o)} | {acc(q)} | "
              f"{res['load_average'][0][0]:.2f}-{res['load_average'][1][0]:.2f} |")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
