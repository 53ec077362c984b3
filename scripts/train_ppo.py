r"""Train a LoRA adapter with PPO and the rule reward (gluerl.ppo.train_ppo), on one task or several mixed.

    accelerate launch --num_processes 2 scripts/train_ppo.py --config config/config.yaml \
        --config-json '{"ppo": {"steps": 200}}' --model-dir results/models/smollm2-135m \
        --prompts rte=data/prompts/0shot/rte/train.jsonl \
        --output-dir results/checkpoints/ppo/smollm2-135m/rte/seed1 --seed 1 \
        [--init-adapter results/checkpoints/sft/smollm2-135m/rte/seed1]

Also runs as ``torchrun --nproc_per_node 2 scripts/train_ppo.py ...`` and, single process, as
``python scripts/train_ppo.py ...``. Accelerate makes ``--num_processes 2`` two processes only on
a machine with more than one GPU; elsewhere (CPU: gloo) add ``--multi_gpu`` or use torchrun. The
first log line (``PPO: ... N process(es)``) says how many took part.

Several ``--prompts TASK=FILE`` train one adapter on all the tasks mixed (each episode is scored by
its own task's rule). Hyperparameters come from the config's ``ppo`` and ``lora`` sections. The
output folder gets the adapter (``adapter_config.json``, ``adapter_model.safetensors``),
``value_head.safetensors``, ``metrics.jsonl`` (one line per step), ``train_summary.json`` and
``checkpoints/step-N/`` (the last two); rerunning the command resumes from the latest checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import sys

from gluerl.errors import GlueRLError

log = logging.getLogger("gluerl.train_ppo")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="config YAML (defaults for every key not given)")
    p.add_argument("--config-json", help="JSON merged over the config (what Snakemake passes)")
    p.add_argument("--model-dir", required=True, help="prepared model folder (results/models/{model})")
    p.add_argument("--prompts", action="append", required=True, metavar="TASK=FILE",
                   help="zero-shot train prompt file of a task; repeat for multi-task training")
    p.add_argument("--output-dir", required=True, help="where the adapter, metrics and checkpoints go")
    p.add_argument("--seed", type=int, default=1, help="seed of initialisation, data order and sampling")
    p.add_argument("--init-adapter", help="start from this LoRA adapter (e.g. the SFT one) instead of a fresh one")
    p.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)")
    p.add_argument("--dump-rank-state", help=argparse.SUPPRESS)  # debug: every rank saves its trainable weights here
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from gluerl.cli import quiet_library_warnings

    quiet_library_warnings()
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from gluerl.config import load_config
        from gluerl.ppo import train_ppo
        from gluerl.scopes import restrict
        from gluerl.training import parse_task_files, tracked_run

        cfg = restrict(load_config(args.config, args.config_json), "train_ppo")
        method = "sft_ppo" if args.init_adapter else "ppo"
        summary = train_ppo(cfg, args.model_dir, parse_task_files(args.prompts), args.output_dir, seed=args.seed,
                            init_adapter=args.init_adapter, dump_rank_state=args.dump_rank_state,
                            track=lambda: tracked_run(cfg, method, args, ("ppo", "lora", "training", "prompting"),
                                                      init_adapter=args.init_adapter or ""))
        final = summary["final_metrics"]
        log.info("done: %d steps, reward_mean %s, %.2f s/step", summary["steps"], final.get("reward_mean"),
                 summary["seconds_per_step"] or 0.0)
    except GlueRLError as e:
        print(f"train_ppo: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
