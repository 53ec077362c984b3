"""Shared command-line plumbing for ``scripts/*.py``: config flags, logging, clean errors.

The ``gluerl`` command itself is :mod:`gluerl.command` (every stage script imports this module, so
it holds nothing a stage does not run)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from .errors import GlueRLError


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argparse parser whose help shows the script's docstring, with the config flags."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE", help="experiment config (YAML); defaults fill what it leaves out")
    p.add_argument("--config-json", metavar="JSON", help="JSON object merged over --config (Snakemake passes the sections a rule reads)")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p


def load(args, stage: str, **wildcards):
    """The config a stage script works with: ``--config`` and ``--config-json`` merged, defaults filled,
    then cut to what ``stage`` declares it reads (``gluerl.scopes.READS``; ``wildcards`` fill
    ``models.{model}`` and ``transfer.{target}``) plus the MLflow settings."""
    from .config import load_config
    from .scopes import restrict

    return restrict(load_config(args.config, args.config_json, check=False), stage, **wildcards)


LIBRARIES = ("transformers", "trl", "peft", "accelerate", "datasets", "torch", "mlflow")


def quiet_library_warnings() -> None:
    """Hide the FutureWarnings and DeprecationWarnings that the libraries raise about their own
    internals (nothing a user of these scripts can change); warnings raised from gluerl stay."""
    import warnings

    pattern = r"(" + "|".join(LIBRARIES) + r")(\.|$)"
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=pattern)


def run(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a script's main; a GlueRLError becomes a one-line message and exit status 1."""
    quiet_library_warnings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        main(argv)
    except GlueRLError as e:
        print(f"error: {e}", file=sys.stderr)  # once: the log records go to the same stream
        sys.exit(1)


def add_table_outputs(p: argparse.ArgumentParser) -> None:
    """The output flags of a table script: CSV, Markdown, bar chart and the metrics JSON."""
    p.add_argument("--csv", required=True, help="table as CSV")
    p.add_argument("--markdown", required=True, help="table as Markdown")
    p.add_argument("--png", required=True, help="bar chart")
    p.add_argument("--metrics", help="nested JSON of the scores (for dvc metrics show)")


def add_model_args(p: argparse.ArgumentParser, adapter_help: str = "LoRA adapter folder to apply") -> None:
    """The flags of every script that runs a prepared model: row labels, model folder, adapter."""
    p.add_argument("--method", required=True, help="method name, the row label in the tables (zeroshot, fewshot, sft, ...)")
    p.add_argument("--model", required=True, help="model name (row label)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--model-dir", required=True, help="prepared model folder")
    p.add_argument("--adapter", help=adapter_help)


def training_parser(doc: str | None, init_adapter: bool = False) -> argparse.ArgumentParser:
    """The flags every training script takes (SFT, GRPO, PPO)."""
    p = parser(doc)
    p.add_argument("--model-dir", required=True, help="prepared model folder (results/models/{model})")
    p.add_argument("--prompts", action="append", required=True, metavar="TASK=FILE",
                   help="zero-shot prompt file of a task's train split; repeat for multi-task training")
    p.add_argument("--output-dir", required=True, help="folder for the adapter, metrics.jsonl and train_summary.json")
    p.add_argument("--seed", type=int, default=1, help="training seed (data order, sampling, LoRA init)")
    if init_adapter:
        p.add_argument("--init-adapter", metavar="DIR", help="start from this LoRA adapter (e.g. the SFT one) instead of a fresh one")
    p.add_argument("--trust-remote-code", action="store_true", help="run the model folder's own code (off unless you trust it)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep {output-dir}/checkpoints after a successful run")
    return p



def main(argv: list[str] | None = None) -> None:
    """The ``gluerl`` command, for console scripts installed before it moved to :mod:`gluerl.command`
    (``pip install -e .`` again points ``gluerl`` there). Imported by name, not ``from .command``:
    the command's modules (``gluerl eval``) are no part of the stages that import this module."""
    import importlib

    importlib.import_module("gluerl.command").main(argv)
