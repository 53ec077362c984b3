"""Where our evaluator's time goes: prefill versus decoding, padding, steps, top operators.

    python benchmarks/profile_eval.py --model-dir results/models/smollm2-135m --data-dir ../shared/glue \
        --shots 5 --limit 64 --torch-profile

Runs ``gluerl.generation.generate`` (the workflow's settings from ``--config``) on RTE prompts
and reports, from a wrapper around the model's forward:

- seconds in prefill calls (more than one new position: the shared prefix once, then each
  batch's own suffixes) and in decoding calls (one new position per sequence), and their share;
- decoding steps per batch against the longest completion in it (steps after every sequence of
  the batch stopped would show as a surplus);
- padding: the share of suffix positions in each batch that are padding;
- with ``--torch-profile``, torch.profiler's top operators by self CPU time on one batch;
- with ``--ab N``, N alternating runs of the same prompts with cascade attention on and off
  (``generate(cascade_prefix=...)``): examples per second of each, their ratio, and whether the
  completions are identical.

py-spy gives the Python side: ``py-spy record -o eval.svg -- python benchmarks/profile_eval.py ...``.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import sys
import time
from pathlib import Path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "config" / "config.yaml")
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--limit", type=int, help="first N validation examples (default all)")
    p.add_argument("--batch-size", type=int, help="override evaluation.batch_size")
    p.add_argument("--torch-profile", action="store_true", help="also run torch.profiler on one batch")
    p.add_argument("--no-cascade", action="store_true", help="profile without cascade attention")
    p.add_argument("--ab", type=int, metavar="N", help="then N alternating runs with cascade attention on and off")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = p.parse_args(argv)

    import torch

    from gluerl import generation
    from gluerl.config import load_config
    from gluerl.data import load_split
    from gluerl.models import load_model, load_tokenizer
    from gluerl.prompts import build_messages, draw_demonstrations, render_prompt
    from gluerl.tasks import get_task

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    ev = cfg["evaluation"]
    bs = args.batch_size or ev["batch_size"]
    task = get_task("rte")
    data = {"source": "local", "local_dir": str(args.data_dir), "max_samples": {}}
    rows = load_split(task, "validation", data)
    rows = rows[: args.limit] if args.limit else rows
    demos = draw_demonstrations(load_split(task, "train", data), task, args.shots, 1) if args.shots else []
    tok = load_tokenizer(args.model_dir)
    model = load_model(args.model_dir, dtype=ev["dtype"], device=ev["device"])
    prompts = [render_prompt(build_messages(r, task, demos), tok, cfg["prompting"]["chat_template"]) for r in rows]

    enc = tok(prompts, add_special_tokens=False)["input_ids"]
    prefix = generation.common_prefix_length(enc)
    lens = sorted((len(e) - prefix for e in enc), reverse=True)
    real = sum(lens)
    padded = sum(max(lens[b : b + bs]) * len(lens[b : b + bs]) for b in range(0, len(lens), bs))
    print(f"{len(prompts)} prompts, {args.shots}-shot: shared prefix {prefix} tokens, own suffix "
          f"{min(lens)}-{max(lens)} (mean {real / len(lens):.0f}); batch {bs}: padding {1 - real / padded:.1%} "
          f"of suffix positions")

    stats = collections.defaultdict(float)
    calls = collections.Counter()
    steps: list[int] = []
    orig = model.forward

    @functools.wraps(orig)  # keeps forward's signature: generate checks it for logits_to_keep
    def timed(*a, **k):
        ids = k.get("input_ids")
        q = ids.shape[1] if ids is not None else 0
        kind = "prefill" if q > 1 else "decode"
        if kind == "prefill":
            steps.append(0)
        else:
            steps[-1] += 1
        t = time.perf_counter()
        out = orig(*a, **k)
        stats[kind] += time.perf_counter() - t
        calls[kind] += 1
        return out

    model.forward = timed
    t0 = time.perf_counter()
    outs = generation.generate(model, tok, prompts, max_new_tokens=ev["max_new_tokens"], batch_size=bs, progress=False,
                               cascade_prefix=not args.no_cascade)
    total = time.perf_counter() - t0
    model.forward = orig
    gen_lens = [len(tok(o, add_special_tokens=False).input_ids) for o in outs]
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
    longest = [max(gen_lens[i] for i in order[b : b + bs]) for b in range(0, len(order), bs)]
    batch_steps = steps[1:] if len(steps) == len(longest) + 1 else steps  # the prefix's own call first
    print(f"total {total:.2f} s ({len(prompts) / total:.2f} ex/s); prefill {stats['prefill']:.2f} s "
          f"({stats['prefill'] / total:.0%}, {calls['prefill']} calls), decode {stats['decode']:.2f} s "
          f"({stats['decode'] / total:.0%}, {calls['decode']} calls), other {total - sum(stats.values()):.2f} s")
    print(f"decode steps per batch {batch_steps}; longest completion per batch (tokens) {longest}")
    print(f"load average {os.getloadavg()}")
    if args.torch_profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            generation.generate(model, tok, prompts[:bs], max_new_tokens=ev["max_new_tokens"], batch_size=bs,
                                progress=False, cascade_prefix=not args.no_cascade)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    if args.ab:
        seconds = {True: [], False: []}
        completions = {}
        for i in range(args.ab):
            for on in ((True, False) if i % 2 == 0 else (False, True)):
                t = time.perf_counter()
                completions[on] = generation.generate(model, tok, prompts, max_new_tokens=ev["max_new_tokens"],
                                                      batch_size=bs, progress=False, cascade_prefix=on)
                seconds[on].append(time.perf_counter() - t)
                print(f"  run {i + 1}, cascade {'on ' if on else 'off'}: {len(prompts) / seconds[on][-1]:.3f} ex/s",
                      flush=True)
        rate = {on: len(prompts) * len(s) / sum(s) for on, s in seconds.items()}
        same = sum(a == b for a, b in zip(completions[True], completions[False]))
        print(f"cascade attention on vs off, {args.ab} runs each, alternating: {rate[True]:.3f} vs "
              f"{rate[False]:.3f} ex/s = {rate[True] / rate[False]:.2f}x; identical completions {same}/{len(prompts)}; "
              f"load average {os.getloadavg()}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
