"""GRPO with the paper's rule reward: a LoRA adapter trained with TRL's GRPOTrainer.

# Full training (one task; several --prompts train one adapter on all of them, mixed)
```
accelerate launch scripts/train_grpo.py \
    --config config/config.yaml \
    --config-json '{"grpo": {"max_steps": 100}}' \
    --model-dir results/models/smollm2-135m \
    --prompts rte=data/prompts/0shot/rte/train.jsonl \
    --output-dir results/checkpoints/grpo/smollm2-135m/rte/seed1 \
    --seed 1
```

# Warm-started from the SFT adapter
```
accelerate launch scripts/train_grpo.py \
    --config config/config.yaml \
    --model-dir results/models/smollm2-135m \
    --prompts rte=data/prompts/0shot/rte/train.jsonl \
    --init-adapter results/checkpoints/sft/smollm2-135m/rte/seed1 \
    --output-dir results/checkpoints/sft_grpo/smollm2-135m/rte/seed1 \
    --seed 1
```

For every prompt the trainer samples `grpo.num_generations` completions (stopped at `</Judgement>`
or after `grpo.max_completion_length` tokens), scores each with the rule reward of `ppo.reward`
(+1 right, -1 wrong, -3 invalid; STS-B 2.5 - |error|) and updates the adapter with GRPO
(learning_rate, max_steps, per_device_train_batch_size, num_generations, temperature, beta,
gradient_accumulation_steps, logging_steps, save_steps from the `grpo` section; LoRA from `lora`;
dtype from `training.dtype`: bf16 on a GPU that supports it, fp32 on CPU).

Writes into --output-dir: adapter_config.json, adapter_model.safetensors, metrics.jsonl (reward,
reward_std, loss, kl, completion length, right and invalid rates per logging step) and
train_summary.json; intermediate checkpoints go to {output-dir}/checkpoints and a rerun resumes
from the last one. Bad input exits with status 1 and a one-line message naming it.
"""

from __future__ import annotations

import argparse
import logging
import sys


def parse_args(argv=None) -> argparse.Namespace:
    from gluerl.cli import training_parser

    return training_parser(__doc__, init_adapter=True).parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from gluerl.grpo import train_grpo
    from gluerl.training import parse_task_files, run_trainer_script

    def train(cfg, callbacks):
        return train_grpo(cfg, args.model_dir, parse_task_files(args.prompts), args.output_dir, seed=args.seed,
                          init_adapter=args.init_adapter, trust_remote_code=args.trust_remote_code,
                          keep_checkpoints=args.keep_checkpoints, callbacks=callbacks)

    return run_trainer_script(args, "grpo", ("grpo", "lora", "training", "prompting"), train,
                              lambda s: f"reward {s['first_reward']} -> {s['final_reward']}",
                              init_adapter=args.init_adapter or "")


if __name__ == "__main__":
    sys.exit(main())
