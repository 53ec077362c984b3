"""Answer drafts on and off: evaluation speed and identical completions (issue 16).

    taskset -c 1 python benchmarks/eval_drafts.py \
        --model-dir results/models/smollm2-135m --data-dir ../shared/glue \
        --tasks sst2 rte --shots 0 5 --limit 64 --rounds 3 --threads 1

For each task and number of shots, the first ``--limit`` validation rows are rendered as the
workflow renders them (``format_split`` with the ``<k>shot-seed<s>`` demonstrations drawn from the
train split by ``draw_demonstrations``, ``render_prompt`` with the model's chat template) and run
through ``gluerl.evaluation.evaluate_split`` with the ``evaluation`` section of ``--config``
(greedy, batch ``--batch-size``, shared-prefix cache, cascade attention; bootstrap intervals off,
the same on both sides), ``answer_drafts`` false and true, alternating within each of ``--rounds``
rounds (the order flips every round), so a change of the machine's load hits both sides. The
model is loaded once. Timed: ``evaluate_split`` (render, tokenise, generate, parse, metrics);
model forward passes are counted. The split's shared-prefix cache is computed before the
timed runs (``generate`` keeps it while the weights stay), so neither side pays for it.

Prints, per task and shots: ex/s of each side (total rows over total seconds of all rounds), the
ratio on/off, the forward passes of one run of each side, and the share of rows whose completions
are identical between the two sides in every round (must be 100%).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's gluerl


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=ROOT / "results" / "models" / "smollm2-135m")
    p.add_argument("--data-dir", type=Path, required=True, help="local GLUE folder: <task>/<split>.jsonl")
    p.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    p.add_argument("--tasks", nargs="+", default=["sst2", "rte"])
    p.add_argument("--shots", nargs="+", type=int, default=[0, 5])
    p.add_argument("--limit", type=int, default=64, help="validation rows per task (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="off/on pairs per task and shots (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument("--demo-seed", type=int, default=1, help="seed of the k-shot demonstrations (default: %(default)s)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(k, "1")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from gluerl.config import load_config
    from gluerl.data import load_split
    from gluerl.evaluation import evaluate_split
    from gluerl.models import load_model, load_tokenizer
    from gluerl.generation import common_prefix_length, shared_prefix_cache
    from gluerl.prompts import kshot_records, render_prompt
    from gluerl.tasks import get_task

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    ev = {**cfg["evaluation"], "batch_size": args.batch_size, "bootstrap_resamples": 0}
    chat = cfg["prompting"]["chat_template"]
    data = {"source": "local", "local_dir": str(args.data_dir), "max_samples": {}}
    tok = load_tokenizer(args.model_dir)
    model = load_model(args.model_dir, dtype=ev["dtype"], device=ev["device"])
    from gluerl.budgets import longest_answer

    ev["max_new_tokens"] = max(ev["max_new_tokens"],
                               longest_answer([get_task(t, cfg["task_files"]) for t in args.tasks], tok)[2])
    forwards = [0]
    real_forward = model.forward

    @functools.wraps(real_forward)  # generate reads the signature (position_ids, logits_to_keep)
    def counted(*a, **k):
        forwards[0] += 1
        return real_forward(*a, **k)

    model.forward = counted
    print(f"model {args.model_dir.name}, {next(model.parameters()).dtype}, threads {torch.get_num_threads()}, "
          f"batch {args.batch_size}, max_new_tokens {ev['max_new_tokens']}, {args.limit} rows, {args.rounds} rounds",
          flush=True)
    table = []
    for tname in args.tasks:
        task = get_task(tname, cfg["task_files"])
        rows = load_split(task, "validation", data)[: args.limit]
        for shots in args.shots:
            records = kshot_records(rows, task, shots, lambda: load_split(task, task.train_split, data),
                                    args.demo_seed, cfg["prompting"]["balanced"])
            seconds = {False: 0.0, True: 0.0}
            calls = {}
            same = [True] * len(records)
            evaluate_split(model, tok, task, "validation", records[:2], ev, chat, progress=False)  # warm-up
            # the split's shared prefix, computed now (generate keeps it): no side pays for it in the timing
            enc = tok([render_prompt(r["messages"], tok, chat) for r in records], add_special_tokens=False)["input_ids"]
            shared_prefix_cache(model, enc[0][: common_prefix_length(enc)])
            for rnd in range(args.rounds):
                got = {}
                for on in ((False, True) if rnd % 2 == 0 else (True, False)):
                    forwards[0] = 0
                    t0 = time.perf_counter()
                    _, preds = evaluate_split(model, tok, task, "validation", records, {**ev, "answer_drafts": on},
                                              chat, progress=False)
                    seconds[on] += time.perf_counter() - t0
                    calls[on] = forwards[0]
                    got[on] = [p["completion"] for p in preds]
                for i, (a, b) in enumerate(zip(got[False], got[True])):
                    if a != b:
                        same[i] = False
                        print(f"    round {rnd} row {i}: off {a!r}, on {b!r}", flush=True)
            n = len(records) * args.rounds
            off, on = n / seconds[False], n / seconds[True]
            table.append((tname, shots, off, on, on / off, calls[False], calls[True], sum(same) / len(same)))
            print(f"  {tname} {shots}-shot: off {off:.2f} ex/s, on {on:.2f} ex/s, x{on / off:.3f}, "
                  f"identical {sum(same)}/{len(same)}", flush=True)
    print()
    print("| task | shots | drafts off ex/s | drafts on ex/s | on/off | forwards off | forwards on | identical |")
    print("|---|---|---|---|---|---|---|---|")
    for tname, shots, off, on, ratio, c_off, c_on, share in table:
        print(f"| {tname} | {shots} | {off:.2f} | {on:.2f} | {ratio:.3f}x | {c_off} | {c_on} | {share:.0%} |")
    return 0 if all(row[-1] == 1.0 for row in table) else 1


if __name__ == "__main__":
    sys.exit(main())
