"""A one-node SLURM cluster on this machine for tests (.ci/slurm-setup.sh), and what tests ask it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / ".ci" / "slurm-setup.sh"
CLUSTER, PARTITION, ACCOUNT = "gluerl", "debug", "gluerl"
PACKAGES_MISSING = 3  # the setup script's exit status when apt cannot install the packages


class Unavailable(Exception):
    """SLURM cannot be installed here (no root, no package repository): a reason to skip."""


def setup_cluster(timeout: float = 900) -> str:
    """Install (if needed) and start the cluster; returns the script's output. Idempotent."""
    cmd = [str(SETUP)]
    if os.geteuid() != 0:
        if not shutil.which("sudo") or subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode:
            raise Unavailable("installing SLURM and starting its daemons needs root (or passwordless sudo)")
        cmd = ["sudo", "-n", "--preserve-env=SLURM_SETUP_CLUSTER,SLURM_SETUP_PARTITION,SLURM_SETUP_ACCOUNT,"
               "SLURM_SETUP_USER", *cmd]
    env = dict(os.environ, SLURM_SETUP_CLUSTER=CLUSTER, SLURM_SETUP_PARTITION=PARTITION,
               SLURM_SETUP_ACCOUNT=ACCOUNT, SLURM_SETUP_USER=_user())
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if proc.returncode == PACKAGES_MISSING:
        raise Unavailable(f"the SLURM/munge/MariaDB packages could not be installed:\n{out[-2000:]}")
    if proc.returncode != 0:
        raise RuntimeError(f"{SETUP} failed ({proc.returncode}):\n{out[-6000:]}")
    return out


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def local_overlay(profile: Path, mem_mb: int = 2000, cpus_per_gpu: int = 1) -> dict:
    """A second profile for a small test node: the profile's set-resources, sized down.

    Loaded after the real profile (`--profile profiles/slurm --profile OVERLAY`) it replaces only
    `set-resources`; every rule keeps its entries (gpu, cpus_per_task, runtime, ...), memory keeps its
    `* attempt` growth but starts at ``mem_mb``, and cpus_per_gpu fits the node.
    """
    cfg = yaml.safe_load(profile.read_text())
    out = {}
    for rule, res in cfg.get("set-resources", {}).items():
        res = dict(res)
        if "mem_mb" in res:
            res["mem_mb"] = re.sub(r"^\s*\d+", str(mem_mb), str(res["mem_mb"]))
        if "cpus_per_gpu" in res:
            res["cpus_per_gpu"] = cpus_per_gpu
        out[rule] = res
    return {"set-resources": out}


def sacct(job_ids: list[str], fields: str = "JobIDRaw,JobName,State,ExitCode,Account,Partition,ReqMem,AllocTRES",
          wait: float = 60) -> dict[str, dict[str, str]]:
    """Accounting records of the given jobs (allocations only), waiting until every id is there and done."""
    names = fields.split(",")
    deadline = time.monotonic() + wait
    while True:
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", fields],
                             capture_output=True, text=True, timeout=60)
        if out.returncode:
            raise RuntimeError(f"sacct failed: {out.stderr}")
        rows = {}
        for line in out.stdout.splitlines():
            rec = dict(zip(names, line.split("|")))
            rows[rec["JobIDRaw"]] = rec
        done = all(j in rows and rows[j]["State"] not in ("PENDING", "RUNNING", "COMPLETING") for j in job_ids)
        if done or time.monotonic() > deadline:
            return rows
        time.sleep(2)
