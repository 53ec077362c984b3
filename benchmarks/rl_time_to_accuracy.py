"""Time to accuracy: our PPO (``sft_ppo``) against TRL's GRPOTrainer, both from the same SFT adapter.

    python benchmarks/rl_time_to_accuracy.py --model-dir results/models/smollm2-135m \
        --sft-adapter results/checkpoints/sft/smollm2-135m/sst2/seed1 \
        --config config/repro/smollm2-sst2-cola.yaml --train-prompts data/prompts/0shot/sst2/train.jsonl \
        --heldout ../shared/glue/sst2/validation.jsonl --exclude data/raw/sst2/validation.jsonl \
        --heldout-n 200 --episodes 256 --eval-every 64

Both sides start from ``--sft-adapter`` on the same base model, train the same LoRA on the same
prompts (the workflow's 0-shot train prompts of the task) with the same rule reward and the same
episode budget (``--episodes`` sampled completions), and with the config's own ``ppo`` and
``grpo`` sections otherwise (the reproduction's: PPO batches of 16 rollouts; GRPO 4 completions a
prompt, 16 completions a step; both learning rate 1e-4, sampling at temperature 1). The KL term
weighs alike on both sides (``--kl equal``, the default): ours' ``ppo.kl_coef`` is set to GRPO's
``grpo.beta``, the reproduction's 0 (TRL's default), so neither side runs a reference forward;
``--kl config`` keeps each section's own (ours 0.05 with its reference forward against GRPO's 0). Ours is
:class:`gluerl.ppo.PPOTrainer` (the ``sft_ppo`` method: KL to the SFT adapter); TRL's is
``trl.GRPOTrainer`` as the workflow's ``grpo`` method builds it (:func:`gluerl.grpo.build_grpo_trainer`,
with ``--init-adapter``: TRL's reference is the SFT adapter too).

Every ``--eval-every`` episodes (and at 0) the training clock stops and the current adapter is
scored greedily on the held-out rows (``--heldout``, less the rows of ``--exclude``, e.g. the
reproduction's scored validation rows; ``--heldout-n`` of them drawn with ``--seed``) with the
workflow's evaluator. ``--seed`` is also both sides' training seed (prompt order, sampling),
unless ``--train-seed`` gives another: the same held-out rows with other training runs. Training
seconds exclude these evaluations and model loading. The two sides run at the same time, each in
its own process on its own core (``taskset``), one torch thread each, so that both see the same
machine.

Printed: per side, accuracy against episodes and training seconds; the time each side takes to
reach ``--threshold`` (default: 5 points above the SFT adapter's held-out accuracy, the same start
for both), the ratio GRPO/ours (target: ours at least 1.5x sooner), and each side's accuracy at
the shorter side's total training time (accuracy at equal wall-clock).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.5  # GRPO's seconds to the threshold over ours
NAMES = {"ours": "ours (sft_ppo)", "grpo": "TRL GRPO"}
STEP_KEYS = ("step", "episodes", "reward_mean", "accuracy", "invalid_rate", "kl", "kl_coef", "entropy", "clipfrac", "approx_kl",
             "explained_variance", "seconds_generation", "seconds_scoring", "seconds_optimisation", "seconds_step")


def heldout_records(args, task, tok):
    """The held-out prompt records: rows of --heldout not in --exclude, --heldout-n drawn with --seed."""
    from gluerl.prompts import format_split

    def read(path):
        return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]

    skip = {r["idx"] for r in read(args.exclude)} if args.exclude else set()
    rows = [r for r in read(args.heldout) if r["idx"] not in skip]
    random.Random(args.seed).shuffle(rows)
    rows = sorted(rows[: args.heldout_n], key=lambda r: r["idx"])
    return format_split(rows, task)


def score(model, tok, task, records, cfg) -> float:
    """Greedy held-out accuracy of the live model, as the workflow's evaluation would score it.

    The model's own generation config is set aside meanwhile: a trainer may have put its sampling
    settings there (our PPO does), and evaluation generates greedily with its own."""
    from transformers import GenerationConfig

    from gluerl.evaluation import evaluate_split

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    saved, was_training = base.generation_config, model.training
    base.generation_config = GenerationConfig(eos_token_id=saved.eos_token_id, pad_token_id=saved.pad_token_id,
                                              bos_token_id=saved.bos_token_id)
    model.eval()
    try:
        res, _ = evaluate_split(model, tok, task, "validation", records, cfg["evaluation"],
                                cfg["prompting"]["chat_template"], progress=False)
    finally:
        base.generation_config = saved
        if was_training:
            model.train()
    return res["accuracy"]


def run_side(args) -> dict:
    import torch

    from gluerl.config import load_config
    from gluerl.models import load_tokenizer
    from gluerl.tasks import get_task
    from gluerl.training import load_train_records

    torch.set_num_threads(1)
    cfg = load_config(args.config)
    task = get_task(args.task, cfg["task_files"])
    tok = load_tokenizer(args.model_dir)
    heldout = heldout_records(args, task, tok)
    points = []  # (episodes, training seconds, accuracy)
    steps = []  # ours: each update's training metrics (rollout accuracy, answer shares, KL, ...)
    out = Path(args.workdir) / args.side
    if args.side == "ours":
        from gluerl.ppo import PPOTrainer

        cfg["ppo"]["steps"] = args.episodes // cfg["ppo"]["batch_size"]
        if args.kl == "equal":  # the KL term weighs as GRPO's: its beta (0: no reference forward on either side)
            cfg["ppo"].update(kl_coef=float(cfg["grpo"]["beta"]), adaptive_kl=False)
        cfg["ppo"]["save_every"] = 10**6
        records = load_train_records([(args.task, args.train_prompts)], tok, cfg["prompting"]["chat_template"],
                                     cfg["task_files"], seed=train_seed(args))
        trainer = PPOTrainer(cfg, args.model_dir, records, out, seed=train_seed(args), init_adapter=args.sft_adapter,
                             tokenizer=tok)
        policy = trainer.model.policy
        points.append((0, 0.0, score(policy, tok, task, heldout, cfg)))
        seconds, episodes = 0.0, 0
        while episodes < args.episodes:
            t0 = time.perf_counter()
            m = trainer.train_step()
            seconds += time.perf_counter() - t0
            episodes += m["episodes"]
            steps.append({k: v for k, v in m.items() if k in STEP_KEYS or k.startswith("pred_frac/")})
            if episodes % args.eval_every == 0 or episodes >= args.episodes:
                points.append((episodes, seconds, score(policy, tok, task, heldout, cfg)))
                print(f"ours: {points[-1]}", flush=True)
    else:
        from transformers import TrainerCallback

        from gluerl.grpo import build_grpo_trainer

        g = cfg["grpo"]
        per_step = g["per_device_train_batch_size"] * g["gradient_accumulation_steps"]
        g["max_steps"] = args.episodes // per_step
        g["save_steps"] = 10**6

        class Clock(TrainerCallback):
            """Training seconds between steps; at every --eval-every episodes, an evaluation off the clock."""

            def __init__(self):
                self.seconds, self.t0, self.trainer = 0.0, None, None

            def on_step_begin(self, a, state, control, **kw):
                self.t0 = time.perf_counter()

            def on_step_end(self, a, state, control, **kw):
                self.seconds += time.perf_counter() - self.t0
                episodes = state.global_step * per_step
                if episodes % args.eval_every == 0 or state.global_step >= g["max_steps"]:
                    points.append((episodes, self.seconds, score(self.trainer.model, tok, task, heldout, cfg)))
                    print(f"grpo: {points[-1]}", flush=True)

        clock = Clock()
        trainer, _, _ = build_grpo_trainer(cfg, args.model_dir, [(args.task, args.train_prompts)], out,
                                           train_seed(args), callbacks=[clock], init_adapter=args.sft_adapter)
        clock.trainer = trainer
        points.append((0, 0.0, score(trainer.model, tok, task, heldout, cfg)))
        trainer.train()
    return {"side": args.side, "points": points, "heldout": len(heldout), "steps": steps,
            "train_seed": train_seed(args)}


def train_seed(args) -> int:
    """The sides' training seed (prompt order, sampling, initialisation): ``--train-seed``, else ``--seed``."""
    return args.seed if args.train_seed is None else args.train_seed


def time_to(points, threshold):
    """Training seconds at the first evaluation at or above ``threshold`` (None: never)."""
    for episodes, seconds, acc in points:
        if acc >= threshold - 1e-12:
            return seconds, episodes
    return None


def accuracy_at(points, seconds):
    """Accuracy of the last evaluation made by ``seconds`` of training."""
    return [acc for _, s, acc in points if s <= seconds + 1e-9][-1]


def summarise(run: dict) -> dict:
    """One run (``{"threshold", "ours", "grpo"}``, as ``--json`` writes it): each side's (seconds, episodes)
    at the threshold (None: never), the ratio GRPO/ours of those seconds (None: ours never; ``bound``:
    GRPO never, so its whole training time gives a lower bound), and the accuracies at equal
    wall-clock (the shorter side's total, ``equal_s``) and at the end."""
    reach = {side: time_to(run[side]["points"], run["threshold"]) for side in NAMES}
    ratio, bound = None, False
    if reach["ours"] is not None:
        grpo = reach["grpo"][0] if reach["grpo"] is not None else run["grpo"]["points"][-1][1]
        ratio, bound = grpo / max(reach["ours"][0], 1e-9), reach["grpo"] is None
    equal = min(run[side]["points"][-1][1] for side in NAMES)
    return {"threshold": run["threshold"], "start": run["ours"]["points"][0][2], "reach": reach, "ratio": ratio,
            "bound": bound, "equal_s": equal,
            "at_equal": {side: accuracy_at(run[side]["points"], equal) for side in NAMES},
            "at_end": {side: run[side]["points"][-1][2] for side in NAMES}}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--sft-adapter", required=True, help="the SFT adapter both sides start from")
    p.add_argument("--config", required=True, help="experiment config (ppo, grpo, lora, evaluation sections)")
    p.add_argument("--task", default="sst2")
    p.add_argument("--train-prompts", required=True, help="0-shot train prompts of the task (the workflow's)")
    p.add_argument("--heldout", required=True, help="validation rows (hub schema JSON Lines)")
    p.add_argument("--exclude", help="rows (JSON Lines with idx) to leave out of --heldout")
    p.add_argument("--heldout-n", type=int, default=200)
    p.add_argument("--episodes", type=int, default=256)
    p.add_argument("--eval-every", type=int, default=64, help="episodes between held-out evaluations")
    p.add_argument("--threshold", type=float, help="held-out accuracy to reach (default: the start + 0.05)")
    p.add_argument("--seed", type=int, default=1, help="draws the held-out rows and, unless --train-seed, trains")
    p.add_argument("--train-seed", type=int,
                   help="training seed of both sides (prompt order, sampling; default: --seed)")
    p.add_argument("--kl", choices=("equal", "config"), default="equal",
                   help="equal (default): ours' KL coefficient is GRPO's beta, fixed, so both sides weigh the KL "
                        "alike (the reproduction's beta 0: neither side runs a reference forward); config: each "
                        "side keeps its own section's (ppo.kl_coef 0.05 against beta 0 in the reproduction)")
    p.add_argument("--json", type=Path, help="also write both sides' points here")
    p.add_argument("--side", choices=("ours", "grpo"), help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    if args.side:
        Path(args.result).write_text(json.dumps(run_side(args)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="gluerl-tta-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = {}
    cores = sorted(os.sched_getaffinity(0))
    for k, side in enumerate(("ours", "grpo")):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--workdir", str(work),
               "--result", str(work / f"{side}.json")]
        for key in ("model_dir", "sft_adapter", "config", "task", "train_prompts", "heldout", "exclude",
                    "heldout_n", "episodes", "eval_every", "seed", "train_seed", "kl"):
            value = getattr(args, key)
            if value is not None:
                cmd += [f"--{key.replace('_', '-')}", str(value)]
        if len(cores) >= 2:
            cmd = ["taskset", "-c", str(cores[k % len(cores)])] + cmd
        procs[side] = (subprocess.Popen(cmd, env=env, stdout=open(work / f"{side}.log", "w"), stderr=subprocess.STDOUT))
    for side, proc in procs.items():
        if proc.wait() != 0:
            sys.stderr.write((work / f"{side}.log").read_text()[-4000:])
            sys.exit(f"rl_time_to_accuracy: the {side} side failed (exit {proc.returncode}); its log is above")
    res = {side: json.loads((work / f"{side}.json").read_text()) for side in procs}
    start = res["ours"]["points"][0][2]
    threshold = args.threshold if args.threshold is not None else start + 0.05
    print(f"held-out rows: {res['ours']['heldout']}; start (the SFT adapter): ours {start:.3f}, "
          f"grpo {res['grpo']['points'][0][2]:.3f}; threshold {threshold:.3f}; KL: {args.kl} "
          f"({'ppo.kl_coef = grpo.beta' if args.kl == 'equal' else 'each section its own'}); "
          f"training seed {train_seed(args)}\n")
    print("| side | episodes | training s | held-out accuracy |\n|---|---|---|---|")
    for side in procs:
        for episodes, seconds, acc in res[side]["points"]:
            print(f"| {NAMES[side]} | {episodes} | {seconds:.0f} | {acc:.3f} |")
    summary = summarise({"threshold": threshold, **res})
    reach = summary["reach"]
    print()
    for side in procs:
        r = reach[side]
        print(f"{NAMES[side]}: " + ("never reached the threshold" if r is None
                                    else f"reached {threshold:.3f} after {r[0]:.0f} s ({r[1]} episodes)"))
    if summary["ratio"] is None:
        print("ratio: ours did not reach the threshold: FAIL")
    elif summary["bound"]:
        print(f"ratio: GRPO did not reach it within {res['grpo']['points'][-1][1]:.0f} s "
              f"(> {summary['ratio']:.2f}x ours; target {TARGET}x): PASS")
    else:
        ratio = summary["ratio"]
        print(f"ratio GRPO/ours: {ratio:.2f}x (target {TARGET}x): {'PASS' if ratio >= TARGET else 'FAIL'}")
    print(f"accuracy at {summary['equal_s']:.0f} s of training (the shorter side's total): "
          + ", ".join(f"{NAMES[s]} {summary['at_equal'][s]:.3f}" for s in procs))
    print(f"os.getloadavg(): {tuple(round(x, 2) for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps({"threshold": threshold, **res}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
