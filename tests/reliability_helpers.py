"""Helpers of the reliability tests: a tiny project, Snakemake in the background, killing it part-way."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import yaml
from test_workflow import copy_workflow, tiny_config

from gluerl.testing import fixture_texts, make_glue_fixture, make_tiny_model

SNAKEMAKE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                 "OMP_NUM_THREADS": "1"}


def make_project(root: Path, config: dict, tasks=("rte",), n_train: int = 24, n_eval: int = 6,
                 pretrained: bool = False) -> Path:
    """A copy of the workflow in ``root/work`` whose ``config/test.yaml`` is ``config`` over the tiny defaults.

    ``pretrained``: the tiny model has seen the fixture texts (it writes words, where a random one repeats a token).
    """
    if not (root / "tiny-src").exists():
        if pretrained:
            from training_helpers import pretrained_tiny_model

            pretrained_tiny_model(root / "tiny-src")
        else:
            make_tiny_model(root / "tiny-src", fixture_texts())
        make_glue_fixture(root / "glue", list(tasks), n_train=n_train, n_eval=n_eval)
    work = copy_workflow(root / "work")
    cfg = tiny_config(root, **{"tasks": list(tasks), "seeds": [1], "training": {"mode": "single"}, **config})
    write_config(work, cfg)
    return work


def write_config(work: Path, cfg: dict, name: str = "test.yaml") -> Path:
    path = work / "config" / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def clone(work: Path, dest: Path) -> Path:
    """A copy of a project folder (files, outputs and Snakemake's metadata, times kept)."""
    shutil.copytree(work, dest, symlinks=True)
    return dest


def smk_cmd(*args: str, config: str = "config/test.yaml") -> list[str]:
    return [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", config, "--replace-workflow-config",
            *args]


def run_smk(work: Path, *args: str, check: bool = True, timeout: int = 600, env: dict | None = None,
            **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(smk_cmd(*args, **kw), cwd=work, env={**os.environ, **SNAKEMAKE_ENV, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def start_smk(work: Path, *args: str, log: Path, **kw) -> subprocess.Popen:
    """Snakemake in the background, in a session (process group) of its own.

    SIGINT gets its default action back: a test run itself started in the background (``pytest &``
    in a script) inherits SIGINT ignored, and Ctrl-C would then not reach Snakemake at all.
    """
    with open(log, "wb") as f:
        return subprocess.Popen(smk_cmd(*args, **kw), cwd=work, env={**os.environ, **SNAKEMAKE_ENV}, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(cond: Callable[[], bool], proc: subprocess.Popen, log: Path, timeout: float = 300,
             what: str = "condition") -> None:
    """Poll ``cond`` every 20 ms until it holds; fail if Snakemake ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"snakemake ended ({proc.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            kill_group(proc)
            raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.02)


def finished_counts(logs: list[Path]) -> dict[str, int]:
    """Rule -> jobs Snakemake reported finished (``Finished jobid: N (Rule: R)``) in these logs."""
    counts: dict[str, int] = {}
    for log in logs:
        for rule in re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", log.read_text(errors="replace")):
            counts[rule] = counts.get(rule, 0) + 1
    return counts


def descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def script_process(proc: subprocess.Popen, script: str):
    """The Python process running ``scripts/<script>`` under Snakemake (not a launcher or shell around it)."""
    for p in descendants(proc.pid):
        try:
            cmd = p.cmdline()
        except Exception:
            continue
        if len(cmd) >= 2 and Path(cmd[0]).name.startswith("python") and cmd[1].endswith(script):
            return p
    return None


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """``sig`` to Snakemake's whole process group (it and every job it started), then reap it."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def max_abs_diff(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b), (sorted(a)[:5], sorted(b)[:5])
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
