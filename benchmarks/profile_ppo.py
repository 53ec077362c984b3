r"""Profile our PPO update (gluerl.ppo) on CPU: where the seconds of one update go.

    python benchmarks/profile_ppo.py --model-dir results/models/smollm2-135m --data-dir ../shared/glue \
        --updates 2 --torch-profile 25
    py-spy record --format raw -o ppo.raw -- python benchmarks/profile_ppo.py --model-dir ... --updates 3
    python benchmarks/profile_ppo.py --summarise-raw ppo.raw     # py-spy samples grouped by gluerl.ppo stage

Runs the same setting as ``benchmarks/ppo_vs_trl.py`` (RTE train prompts, 4 rollouts, 2 minibatches,
1 PPO epoch, 24 new tokens, fp32, LoRA r=16), one warm-up update and then ``--updates`` profiled
ones, and prints each update's generation / scoring / optimisation seconds. With
``--torch-profile N`` it prints torch.profiler's top N operators (self CPU time) over the profiled
updates. ``--summarise-raw`` reads a py-spy ``--format raw`` file and prints the share of samples
in each call path of :class:`gluerl.ppo.PPOTrainer` (its gluerl.ppo frames below ``train_step``)
and in the top library frames. ``--calls`` times every forward pass of the decoder (the model
without its output layer) and prints, per update, the passes over whole sequences (rows x tokens,
seconds, with or without gradient), the one-token decoding steps, and the rest of the update
(sampling, output layer, backward, optimizer, bookkeeping).
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path


def summarise_raw(path: str, top: int = 20) -> None:
    """py-spy raw output: ``frame;frame;...;frame count`` per line (outermost first)."""
    stages: collections.Counter = collections.Counter()
    leaves: collections.Counter = collections.Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        ours = [f.split(" (")[0] for f in frames if "gluerl/ppo/" in f]
        ours = [f for f in ours if f not in ("PPOTrainer.train", "PPOTrainer.train_step")]
        stages[" > ".join(ours) if ours else "(outside gluerl.ppo)"] += n
        leaves[frames[-1]] += n
    print(f"{total} samples\n\ngluerl.ppo call path (below train_step):")
    for name, n in stages.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("\ninnermost frame:")
    for name, n in leaves.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {name}")


def timed_calls(decoder) -> list[tuple[tuple[int, int], float, bool]]:
    """Hooks on ``decoder`` that append ``((rows, tokens), seconds, with gradient)`` for each forward pass."""
    import torch

    calls: list[tuple[tuple[int, int], float, bool]] = []
    start: list[float] = []

    def before(_module, args, kwargs):
        start.append(time.perf_counter())

    def after(_module, args, kwargs, _out):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs["inputs_embeds"]
        calls.append((tuple(ids.shape[:2]), time.perf_counter() - start.pop(), torch.is_grad_enabled()))

    decoder.register_forward_pre_hook(before, with_kwargs=True)
    decoder.register_forward_hook(after, with_kwargs=True)
    return calls


def print_calls(calls, wall: float) -> None:
    """Passes over sequences in order, the one-token steps summed, and what the update spent outside both."""
    steps = [c for c in calls if c[0][1] == 1]
    passes = [c for c in calls if c[0][1] > 1]
    for (rows, tokens), sec, grad in passes:
        print(f"    {rows} x {tokens:>4} tokens {'with' if grad else 'no  '} gradient: {sec:6.2f} s")
    step_s = sum(c[1] for c in steps)
    print(f"    {len(steps)} one-token steps of {steps[0][0][0] if steps else 0} rows: {step_s:.2f} s "
          f"({1000 * step_s / max(len(steps), 1):.0f} ms each)")
    print(f"    outside the decoder's forward passes: {wall - step_s - sum(c[1] for c in passes):.2f} s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="results/models/smollm2-135m", help="prepared model folder, or 'tiny'")
    p.add_argument("--data-dir", default="../shared/glue", help="folder with rte/train.jsonl")
    p.add_argument("--updates", type=int, default=2, help="profiled updates after one warm-up update")
    p.add_argument("--torch-profile", type=int, default=0, metavar="N", help="print torch.profiler's top N ops")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--summarise-raw", metavar="FILE", help="summarise a py-spy --format raw file and exit")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="the base model's precision")
    p.add_argument("--calls", action="store_true", help="time every decoder forward pass of each update")
    args = p.parse_args(argv)
    if args.summarise_raw:
        summarise_raw(args.summarise_raw)
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import json

    import torch

    import ppo_vs_trl as bench

    with tempfile.TemporaryDirectory() as tmp:
        args.trials = 1
        model_dir, prompts = bench.prepare(args, Path(tmp))
        args.model_dir = str(model_dir)
        records = [json.loads(line) for line in prompts.read_text().splitlines()]
        from gluerl.config import load_config
        from gluerl.ppo import PPOTrainer

        cfg = load_config(None, {
            "lora": {"r": bench.LORA_R, "alpha": bench.LORA_ALPHA, "target_modules": "all-linear"},
            "training": {"dtype": args.dtype},
            "ppo": {"batch_size": bench.BATCH, "mini_batch_size": bench.BATCH // bench.N_MINIBATCHES,
                    "ppo_epochs": 1, "min_new_tokens": bench.NEW_TOKENS, "max_new_tokens": bench.NEW_TOKENS,
                    "steps": args.updates + 1, "save_every": 10**6}})
        trainer = PPOTrainer(cfg, model_dir, records, Path(tmp) / "out", seed=args.seed)
        lens = [len(trainer.tok(r["prompt"], add_special_tokens=False)["input_ids"]) for r in records]
        weights = str(trainer.model.policy.get_input_embeddings().weight.dtype).removeprefix("torch.")
        print(f"prompt tokens: min {min(lens)}, mean {sum(lens) / len(lens):.0f}, max {max(lens)}; "
              f"base weights {weights}")
        calls = timed_calls(trainer.model.policy.get_base_model().model) if args.calls else None
        trainer.train_step()  # warm-up
        prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if args.torch_profile else None
        if prof:
            prof.__enter__()
        for _ in range(args.updates):
            if calls is not None:
                calls.clear()
            t0 = time.perf_counter()
            m = trainer.train_step()
            wall = time.perf_counter() - t0
            print(f"update {m['step']}: {wall:.2f} s = generation {m['seconds_generation']:.2f} "
                  f"+ scoring {m['seconds_scoring']:.2f} + optimisation {m['seconds_optimisation']:.2f}; "
                  f"{m['response_length']:.1f} response tokens")
            if calls is not None:
                print_calls(calls, wall)
        if prof:
            prof.__exit__(None, None, None)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.torch_profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
