"""GPU check: evaluation and a few PPO steps in bf16, with speed and memory, in one command.

    python scripts/gpu_check.py --tokenizer-dir results/models/smollm2-135m --data-dir ../shared/glue \
        --output gpu_check.json

For each model shape (SmolLM2-135M, taken from ``--tokenizer-dir``'s config, and Qwen2.5-0.5B) it
builds a randomly initialised model (speed does not depend on the weights) with the tokenizer of
``--tokenizer-dir``, then measures on RTE validation prompts:

- our evaluator (batched, shared-prefix cache, stop at ``</Judgement>``) zero-shot and 5-shot,
  against the paper's loop (one example at a time, sampling 24-31 new tokens, no stop string) on
  a subset, as examples per second and their ratio;
- ``--ppo-steps`` PPO updates (batch 16, minibatch 8, 4 PPO epochs, 12-31 new tokens): seconds per
  step split into generation / scoring / optimisation, tokens per second;
- peak GPU memory of each part.

Random weights never write ``</Judgement>``, so every sequence runs to ``max_new_tokens``: our
evaluator's numbers are a lower bound of its speed on a trained model. Runs on CPU too (slowly).
Under 8 minutes on one H100.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

QWEN25_05B = dict(  # Qwen2.5-0.5B-Instruct's shape
    model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
    num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0,
    rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu",
)


def build_model(kind: str, tokenizer_dir: Path, out: Path, dtype):
    """Random model of the named shape saved with the tokenizer as a plain HF folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if kind == "smollm2-135m":
        cfg = AutoConfig.from_pretrained(tokenizer_dir)
    else:
        cfg = AutoConfig.for_model(**QWEN25_05B)
    cfg.pad_token_id, cfg.eos_token_id = tok.pad_token_id or tok.eos_token_id, tok.eos_token_id
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = cfg.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def gpu_peak(reset: bool = False) -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats()
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


def paper_loop(model, tok, prompts, seed: int = 0) -> float:
    """The paper's evaluation loop: one example at a time, sampling 24-31 new tokens, no stop."""
    import torch

    rng = random.Random(seed)
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    with torch.inference_mode():
        for p in prompts:
            ids = tok(p, return_tensors="pt", add_special_tokens=False).to(device)
            n = rng.randint(24, 31)
            model.generate(**ids, do_sample=True, top_k=0, top_p=1.0, max_new_tokens=n, min_new_tokens=n,
                           pad_token_id=tok.pad_token_id)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def check_model(kind: str, args, work: Path) -> dict:
    import torch

    from gluerl.config import load_config
    from gluerl.data import load_split
    from gluerl.generation import generate
    from gluerl.models import load_model, load_tokenizer
    from gluerl.ppo import PPOTrainer
    from gluerl.prompts import build_messages, draw_demonstrations, format_split, render_prompt
    from gluerl.tasks import get_task
    from gluerl.training import load_train_records

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    mdir = build_model(kind, args.tokenizer_dir, work / kind, dtype)
    tok = load_tokenizer(mdir)
    model = load_model(mdir, dtype="bfloat16" if device == "cuda" else "float32", device=device)
    task = get_task("rte")
    data = {"source": "local", "local_dir": str(args.data_dir), "max_samples": {}}
    val, train = load_split(task, "validation", data), load_split(task, "train", data)
    val = val[: args.eval_examples] if args.eval_examples else val
    demos = draw_demonstrations(train, task, 5, seed=1)
    res: dict = {"model": kind, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                 "parameters_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}
    for shots, ds in (("0shot", []), ("5shot", demos)):
        prompts = [render_prompt(build_messages(r, task, ds), tok) for r in val]
        generate(model, tok, prompts[: args.batch_size], max_new_tokens=12, batch_size=args.batch_size, progress=False)
        gpu_peak(reset=True)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        generate(model, tok, prompts, max_new_tokens=12, batch_size=args.batch_size, progress=False)
        if device == "cuda":
            torch.cuda.synchronize()
        ours = time.perf_counter() - t0
        sub = prompts[: args.paper_examples]
        paper_loop(model, tok, sub[:2])  # warm-up
        paper = paper_loop(model, tok, sub)
        n_tok = sum(len(tok(p, add_special_tokens=False).input_ids) for p in prompts)
        res[shots] = {
            "examples": len(prompts), "ours_examples_per_s": round(len(prompts) / ours, 2),
            "prompt_tokens_per_s": round(n_tok / ours, 1),
            "paper_loop_examples_per_s": round(len(sub) / paper, 2),
            "speedup": round((len(prompts) / ours) / (len(sub) / paper), 1),
            "peak_gpu_GiB": gpu_peak(),
        }
        print(f"[{kind}] eval {shots}: {res[shots]}", flush=True)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()

    rows = format_split(train[:256], task)
    pfile = work / f"{kind}-train.jsonl"
    pfile.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(overrides={"ppo": {"steps": args.ppo_steps, "batch_size": args.ppo_batch,
                                         "mini_batch_size": max(args.ppo_batch // 2, 1),
                                         "ppo_epochs": args.ppo_epochs, "save_every": 10_000},
                                 "training": {"dtype": "bfloat16" if device == "cuda" else "float32"}})
    records = load_train_records([("rte", pfile)], tok, "auto")
    gpu_peak(reset=True)
    trainer = PPOTrainer(cfg, mdir, records, work / f"{kind}-ppo", seed=1, tokenizer=tok)
    summary = trainer.train()
    lines = [json.loads(x) for x in (work / f"{kind}-ppo" / "metrics.jsonl").read_text().splitlines()]
    steady = lines[1:] or lines  # the first step includes warm-up
    mean = lambda k: round(sum(x[k] for x in steady) / len(steady), 3)  # noqa: E731
    res["ppo"] = {
        "steps": summary["steps"], "seconds_per_step": mean("seconds_generation") + mean("seconds_scoring")
        + mean("seconds_optimisation"),
        "seconds_generation": mean("seconds_generation"), "seconds_scoring": mean("seconds_scoring"),
        "seconds_optimisation": mean("seconds_optimisation"), "tokens_per_second": mean("tokens_per_second"),
        "episodes_per_second": round(args.ppo_batch / (mean("seconds_generation") + mean("seconds_scoring")
                                           + mean("seconds_optimisation")), 2),
        "peak_gpu_GiB": gpu_peak(),
    }
    print(f"[{kind}] ppo: {res['ppo']}", flush=True)
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer-dir", type=Path, required=True, help="folder with config.json and the tokenizer (SmolLM2)")
    p.add_argument("--data-dir", type=Path, required=True, help="local GLUE folder with rte/{train,validation}.jsonl")
    p.add_argument("--models", nargs="+", default=["smollm2-135m", "qwen2.5-0.5b"])
    p.add_argument("--batch-size", type=int, default=64, help="evaluation batch size")
    p.add_argument("--eval-examples", type=int, help="evaluate only this many validation examples (default all 277)")
    p.add_argument("--paper-examples", type=int, default=32, help="examples timed with the paper's loop")
    p.add_argument("--ppo-steps", type=int, default=4)
    p.add_argument("--ppo-batch", type=int, default=16, help="rollouts per PPO update (minibatch: half)")
    p.add_argument("--ppo-epochs", type=int, default=4)
    p.add_argument("--output", type=Path, help="JSON file for the results")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="gluerl-gpu-check-"))
    results = []
    try:
        for kind in args.models:
            results.append(check_model(kind, args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\nmodel | device | eval 0-shot ex/s (x paper) | eval 5-shot ex/s (x paper) | PPO s/step | PPO tok/s | peak GiB")
    for r in results:
        peak = max(v for v in (r["0shot"]["peak_gpu_GiB"], r["5shot"]["peak_gpu_GiB"], r["ppo"]["peak_gpu_GiB"]) if v is not None) \
            if r["ppo"]["peak_gpu_GiB"] is not None else None
        print(f"{r['model']} | {r['device']} | {r['0shot']['ours_examples_per_s']} (x{r['0shot']['speedup']}) | "
              f"{r['5shot']['ours_examples_per_s']} (x{r['5shot']['speedup']}) | {r['ppo']['seconds_per_step']:.2f} | "
              f"{r['ppo']['tokens_per_second']} | {peak}")
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
