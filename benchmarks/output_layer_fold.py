r"""What ``gluerl.models.contiguous_output_layer`` buys: a frozen output layer fed a slice, with and without it.

    python benchmarks/output_layer_fold.py --model-dir results/models/smollm2-135m --rows 32 --repeats 3

With ``logits_to_keep`` a Hugging Face causal LM slices its hidden states before the output layer;
torch's ``matmul`` folds that non-contiguous slice into one ``mm`` only when the weight needs a
gradient, and runs a ``bmm`` against the weight expanded to every row when it does not (every
LoRA model). Both variants are loaded by the same code (the evaluator's ``gluerl.models.load_model``
with an adapter, unmerged as it is in bf16, and a PEFT policy as the PPO trainer builds it); the
"without" variant has ``contiguous_output_layer`` replaced by a no-op while it loads. Timed, in turn
with and without, ``--repeats`` times each (one warm-up call excluded):

- evaluation: ``generate`` of ``--rows`` greedy answers of 4 tokens (the prefill keeps 1 position);
- PPO: one forward and backward of 4 rows keeping 24 positions (the trainer's training pass).

Prints the median seconds of each and the ratio without / with, per half-precision dtype
(``--dtypes``; fp32 models get no hook: torch's ``bmm`` does not copy the weight there).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock


def build(model_dir: Path, adapter: Path, dtype: str, fold: bool):
    """(evaluator's model, PPO-style PEFT policy), loaded with or without the contiguous output layer."""
    import torch
    from peft import LoraConfig, get_peft_model

    from gluerl import models
    from gluerl.training import load_base_model

    patch = contextlib.nullcontext() if fold else mock.patch.object(models, "contiguous_output_layer", lambda m: m)
    with patch:
        evaluator = models.load_model(model_dir, adapter, dtype=dtype, device="cpu")
        base = load_base_model(model_dir, getattr(torch, dtype))
    policy = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")).eval()
    return evaluator, policy


def time_calls(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(args, model_dir: Path, adapter: Path, dtype: str) -> dict[str, dict[str, float]]:
    import torch

    from gluerl.models import load_tokenizer

    tok = load_tokenizer(model_dir)
    text = "Review: the film was a long and tedious exercise in style over substance, and it knew it."
    gen_batch = tok([f"{text} ({i})" for i in range(args.rows)], return_tensors="pt", padding=True)
    ppo_batch = tok([f"{text} " * (2 + i % 2) for i in range(4)], return_tensors="pt", padding=True)
    out: dict[str, dict[str, float]] = {"evaluation": {}, "ppo": {}}
    variants = {fold: build(model_dir, adapter, dtype, fold) for fold in (True, False)}
    for _ in range(2):  # in turn, twice, so that both see the same machine
        for fold, (evaluator, policy) in variants.items():
            key = "with" if fold else "without"

            def generate():
                with torch.no_grad():
                    evaluator.generate(**gen_batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)

            def train_pass():
                policy.zero_grad(set_to_none=True)
                logits = policy(**ppo_batch, logits_to_keep=24).logits
                logits.float().logsumexp(-1).mean().backward()

            for name, fn in (("evaluation", generate), ("ppo", train_pass)):
                seconds = time_calls(fn, args.repeats)
                out[name][key] = min(seconds, out[name].get(key, float("inf")))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="results/models/smollm2-135m", help="prepared model folder, or 'tiny'")
    p.add_argument("--rows", type=int, default=32, help="rows of the evaluation batch")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per variant and round")
    p.add_argument("--dtypes", nargs="+", default=["bfloat16"], choices=["bfloat16", "float16"],
                   help="half precisions only: in fp32 the hook is not applied (see gluerl.models)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args(argv)

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model_dir)
        if args.model_dir == "tiny":
            from gluerl.testing import fixture_texts, make_tiny_model

            model_dir = make_tiny_model(Path(tmp) / "model", fixture_texts())
        if not (model_dir / "config.json").is_file():
            sys.exit(f"output_layer_fold: --model-dir {model_dir} has no config.json")
        adapter = Path(tmp) / "adapter"
        torch.manual_seed(0)
        get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), LoraConfig(
            r=16, lora_alpha=32, target_modules="all-linear")).save_pretrained(adapter)
        print(f"model {args.model_dir}; evaluation: generate, {args.rows} rows x 4 greedy tokens; PPO: forward and "
              f"backward of 4 rows keeping 24 positions; median of {args.repeats} calls, best of 2 rounds; "
              f"{args.threads} thread(s)\n")
        print("| dtype | pass | without (s) | with (s) | without / with |")
        print("|---|---|---|---|---|")
        for dtype in args.dtypes:
            for name, r in measure(args, model_dir, adapter, dtype).items():
                print(f"| {dtype} | {name} | {r['without']:.3f} | {r['with']:.3f} | {r['without'] / r['with']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
