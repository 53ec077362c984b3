"""Supervised fine-tuning (the SFT warm start): a LoRA adapter trained on the gold answers with TRL's SFTTrainer.

# Full training (one task; several --prompts train one adapter on all of them, mixed)
```
accelerate launch scripts/train_sft.py \
    --config config/config.yaml \
    --config-json '{"sft": {"max_steps": 100}}' \
    --model-dir results/models/smollm2-135m \
    --prompts rte=data/prompts/0shot/rte/train.jsonl \
    --output-dir results/checkpoints/sft/smollm2-135m/rte/seed1 \
    --seed 1
```

Hyperparameters come from the config's `sft` section (learning_rate, num_train_epochs, max_steps,
per_device_train_batch_size, gradient_accumulation_steps, warmup_ratio, max_length, logging_steps,
save_steps), the adapter from `lora`, the dtype from `training.dtype` (bf16 on a GPU that supports
it, fp32 on CPU) and the prompt rendering from `prompting.chat_template`. The loss is on the answer
(`word</Judgement>` + EOS) only.

Writes into --output-dir: adapter_config.json, adapter_model.safetensors, metrics.jsonl (one line
per logging step) and train_summary.json; intermediate checkpoints go to {output-dir}/checkpoints
and a rerun resumes from the last one. Bad input (a config key, a prompt file row) exits with
status 1 and a one-line message naming it.
"""

from __future__ import annotations

import argparse
import logging
import sys


def parse_args(argv=None) -> argparse.Namespace:
    from gluerl.cli import training_parser

    return training_parser(__doc__).parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from gluerl.sft import train_sft
    from gluerl.training import parse_task_files, run_trainer_script

    def train(cfg, callbacks):
        return train_sft(cfg, args.model_dir, parse_task_files(args.prompts), args.output_dir, seed=args.seed,
                         trust_remote_code=args.trust_remote_code, keep_checkpoints=args.keep_checkpoints,
                         callbacks=callbacks)

    return run_trainer_script(args, "sft", ("sft", "lora", "training", "prompting"), train,
                              lambda s: f"loss {s['first_loss']} -> {s['final_loss']}")


if __name__ == "__main__":
    sys.exit(main())
