"""MLflow tracking for every stage: one run per stage invocation, grouped by pipeline.

    with start_run(cfg["mlflow"], run_name="sft-qwen-rte", stage="sft",
                   params=flatten(cfg_section, "sft") | {"model": m, "seed": 1}) as tr:
        tr.log_metrics({"reward": 0.5}, step=10)
        tr.log_artifact("results/.../summary.json")

``start_run`` checks that the tracking store answers and raises ``ConfigError`` at once if it
does not, so a stage fails before its heavy work. After that, tracking is best effort: a failure
of MLflow while logging (metrics, artifacts, ending the run) is a warning, never an exception,
so finished work is never lost because of tracking. An exception raised by the caller's code
inside the ``with`` block marks the run FAILED and propagates.

Store: ``$MLFLOW_TRACKING_URI`` (if non-empty), else ``mlflow.tracking_uri``, else
``sqlite:///<cwd>/results/mlflow.db`` (no server needed). Runs of one pipeline invocation share
the tag ``gluerl.pipeline_id`` (env ``GLUERL_PIPELINE_ID``, else one id per process).

Runs of one Snakemake invocation nest under one parent run: the workflow's ``onstart`` hook calls
:func:`start_pipeline_run`, which opens the parent, prints its id and sets ``$GLUERL_PARENT_RUN_ID``
for the jobs (``onsuccess``/``onerror``: :func:`end_pipeline_run`); a stage run started with that
variable set carries the tag ``mlflow.parentRunId`` (the MLflow UI shows it nested). A stage run
outside Snakemake, or with the variable unset, is a top-level run as before.

Metric names are grouped by prefix (:func:`metric_key`): ``objective/`` (reward, accuracy, invalid
rate, KL and its coefficient), ``policy/`` (policy loss, entropy, clip fraction, approximate KL,
gradient norm), ``value/`` (value loss and clip fraction, explained variance, returns),
``answers/`` (predicted-label shares), ``time/``, ``train/`` (the Trainer's loss and learning
rate), ``eval/`` (evaluation metrics and their interval bounds); ``step`` is the step, never a
metric. System metrics (CPU, memory, disk, network; GPU with ``pynvml``) are sampled into every
stage run by MLflow's own monitor when ``psutil`` is installed, unless
``$MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING`` is ``false``. Data files are logged as dataset inputs
(:meth:`Tracker.log_datasets`).

Disabled (``enabled=False``, ``mlflow.enabled: false`` or a process with ``$RANK`` other than 0):
every method is a no-op and MLflow is not even imported. Nothing here logs environment
variables; values that look like credentials are replaced by ``***``.

The package, by role: :mod:`.params` (flattened params, credentials hidden, grouped metric names),
:mod:`.store` (the store's URI and reachability check, the pipeline id, git commit and package
versions) and :mod:`.run` (:class:`Tracker`, the stage and pipeline runs, the Trainer callback).
"""

from __future__ import annotations

from .params import (MAX_KEY_LEN, MAX_PARAM_LEN, MAX_TAG_LEN, NOT_METRICS, REDACTED, clean_params, eval_metrics,
                     flatten, is_secret_key, metric_key, redact_text)
from .run import (PARENT_ENV, RUN_REFERENCE, Terminated, Tracker, end_pipeline_run, start_pipeline_run, start_run,
                  training_run_of)
from .store import (CHECK_TIMEOUT_S, DEFAULT_DB, PACKAGES, check_store, git_commit, package_versions, pipeline_id,
                    resolve_uri)

# MlflowTrainerCallback is left out so that ``import *`` does not import transformers
__all__ = [
    "CHECK_TIMEOUT_S", "DEFAULT_DB", "MAX_KEY_LEN", "MAX_PARAM_LEN", "MAX_TAG_LEN", "NOT_METRICS", "PACKAGES",
    "PARENT_ENV", "REDACTED", "RUN_REFERENCE", "Terminated", "Tracker", "check_store", "clean_params",
    "end_pipeline_run", "eval_metrics", "flatten", "git_commit", "is_secret_key", "metric_key", "package_versions",
    "pipeline_id", "redact_text", "resolve_uri", "start_pipeline_run", "start_run", "training_run_of",
]


def __getattr__(name: str):
    # MlflowTrainerCallback is built on first use: importing transformers takes seconds, and the
    # stages that only evaluate or assemble tables need not pay for it.
    if name == "MlflowTrainerCallback":
        from .run import _make_callback_class

        cls = _make_callback_class()
        cls.__module__ = __name__
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
