"""GPU slots for local multi-GPU runs: each job gets its own devices, released even on a crash.

Snakemake's ``--resources gpu=4`` caps how many GPUs running jobs request in total but assigns no
device ids, so two jobs would both land on GPU 0. This module gives a job ``n`` device ids of its
own: one lock file per device, held with ``flock`` for the job's lifetime (the kernel drops the
lock when the process ends, however it ends, so a failed or killed job frees its slots), and runs
the job's command with ``CUDA_VISIBLE_DEVICES`` set to those ids.

    python -m gluerl.gpus --count 1 -- python scripts/evaluate.py ...
    python -m gluerl.gpus --count 2 --accelerate -- scripts/train_ppo.py ...

With ``--accelerate`` the command is a script run by ``accelerate launch`` with one process per
device the job got (``--accelerate-config FILE`` passes an Accelerate config). Under SLURM
(``SLURM_JOB_ID`` set) the allocation is used as it is. ``--count 0`` runs the command without
GPUs (``CUDA_VISIBLE_DEVICES`` empty when the machine has some); on a machine without GPUs every
job runs on the CPU (one process). The devices are
``$GLUERL_GPU_IDS`` (comma-separated) or those ``nvidia-smi -L`` lists; the lock files live in
``$GLUERL_GPU_LOCK_DIR`` (default: ``$TMPDIR/gluerl-gpu-locks``).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import ConfigError


def visible_devices() -> list[str]:
    """Device ids this machine offers to jobs."""
    env = os.environ.get("GLUERL_GPU_IDS")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def lock_dir() -> Path:
    d = Path(os.environ.get("GLUERL_GPU_LOCK_DIR") or Path(tempfile.gettempdir()) / "gluerl-gpu-locks")
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextmanager
def acquire(count: int, devices: list[str] | None = None, timeout: float = 24 * 3600,
            poll: float = 0.5) -> Iterator[list[str]]:
    """Hold ``count`` device ids exclusively for the duration of the block."""
    devices = visible_devices() if devices is None else devices
    if count > len(devices):
        raise ConfigError(f"a job asks for {count} GPU(s) but this machine offers {len(devices)} ({devices})")
    held: list[tuple[str, int]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(held) < count:
            for dev in devices:
                if len(held) == count or any(d == dev for d, _ in held):
                    continue
                fd = os.open(lock_dir() / f"gpu{dev}.lock", os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                held.append((dev, fd))
            if len(held) < count:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no {count} free GPU(s) among {devices} after {timeout:.0f}s")
                time.sleep(poll)
        yield [d for d, _ in held]
    finally:
        for _, fd in held:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def accelerate_command(script_cmd: list[str], processes: int, config_file: str | None = None) -> list[str]:
    """``accelerate launch`` with ``processes`` processes (several: multi-GPU DDP, or gloo on CPU)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if config_file:
        cmd += ["--config_file", config_file]
    cmd += ["--num_processes", str(max(processes, 1)), "--num_machines", "1", "--dynamo_backend", "no"]
    if not config_file:  # the default, said out loud: accelerate otherwise warns that it assumed it
        cmd += ["--mixed_precision", "no"]
    if processes > 1:
        cmd += ["--multi_gpu"]
    return cmd + script_cmd


def _slurm_gpus() -> int:
    ids = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return len([d for d in ids.split(",") if d.strip()])


def thread_env(env: dict[str, str], threads: int | None) -> dict[str, str]:
    """``env`` with OMP/MKL thread counts set to the job's ``threads`` (a count the user exported wins).

    PyTorch otherwise takes every core of the machine for each job: two jobs that Snakemake runs side
    by side then fight over the same cores (OpenMP threads spin waiting for each other), each several
    times slower than alone.
    """
    if threads and threads > 0:
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(key, str(threads))
    return env


def run_with_gpus(count: int, cmd: list[str], accelerate: bool = False, accelerate_config: str | None = None,
                  threads: int | None = None) -> int:
    """Run ``cmd`` with its own ``count`` GPUs and ``threads`` CPU threads; returns its exit status."""
    env = thread_env(dict(os.environ), threads)

    def call(n_devices: int) -> int:
        full = accelerate_command(cmd, n_devices, accelerate_config) if accelerate else cmd
        return subprocess.call(full, env=env)

    if os.environ.get("SLURM_JOB_ID"):
        return call(_slurm_gpus())
    devices = visible_devices()
    if count <= 0 or not devices:
        if count > 0:
            print("gluerl.gpus: no GPU on this machine; running on the CPU", file=sys.stderr, flush=True)
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = ""
        return call(0)
    with acquire(count, devices) as ids:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
        print(f"gluerl.gpus: CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}", file=sys.stderr, flush=True)
        return call(len(ids))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m gluerl.gpus", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, required=True, help="GPUs the command needs (0: none)")
    p.add_argument("--accelerate", action="store_true", help="run the command (a script and its flags) with accelerate launch, one process per device")
    p.add_argument("--accelerate-config", metavar="FILE", help="Accelerate config file (config/accelerate/*.yaml)")
    p.add_argument("--threads", type=int, help="CPU threads of the job (Snakemake's {threads}): OMP_NUM_THREADS and MKL_NUM_THREADS, unless already set")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command")
    args = p.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        p.error("give the command after --")
    try:
        sys.exit(run_with_gpus(args.count, cmd, args.accelerate, args.accelerate_config, args.threads))
    except (ConfigError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
