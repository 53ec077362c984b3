"""GPU slot assignment with fake devices: concurrent jobs get disjoint sets; failures free slots."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gluerl.errors import ConfigError
from gluerl.gpus import acquire


@pytest.fixture
def fake_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("GLUERL_GPU_IDS", "0,1,2,3")
    monkeypatch.setenv("GLUERL_GPU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    return tmp_path


# a job that records the devices it was given, then holds them for a while (or fails)
JOB = (
    "import os, sys, time; from pathlib import Path; "
    "Path(sys.argv[1]).write_text(os.environ['CUDA_VISIBLE_DEVICES']); time.sleep(float(sys.argv[2])); "
    "sys.exit(int(sys.argv[3]))"
)


def launch(out: Path, count: int, hold: float, status: int = 0):
    return subprocess.Popen([sys.executable, "-m", "gluerl.gpus", "--count", str(count), "--",
                             sys.executable, "-c", JOB, str(out), str(hold), str(status)],
                            stderr=subprocess.PIPE, text=True)


def wait_for(paths, timeout=60):
    t0 = time.time()
    while not all(p.exists() and p.read_text() for p in paths):
        assert time.time() - t0 < timeout, "jobs did not start"
        time.sleep(0.1)


def test_concurrent_jobs_get_disjoint_devices(fake_gpus):
    outs = [fake_gpus / f"job{i}" for i in range(3)]
    procs = [launch(outs[0], 2, 3), launch(outs[1], 1, 3), launch(outs[2], 1, 3)]
    wait_for(outs)
    sets = [set(o.read_text().split(",")) for o in outs]
    assert [len(s) for s in sets] == [2, 1, 1]
    assert set().union(*sets) <= {"0", "1", "2", "3"}
    assert sum(len(s) for s in sets) == len(set().union(*sets))  # disjoint
    assert [p.wait(60) for p in procs] == [0, 0, 0]


def test_job_waits_for_busy_devices_and_failed_job_releases(fake_gpus):
    first = launch(fake_gpus / "a", 4, 2, status=3)  # holds all four, then fails
    wait_for([fake_gpus / "a"])
    t_start = time.time()
    second = launch(fake_gpus / "b", 2, 0)
    assert second.wait(60) == 0
    assert first.wait(60) == 3  # the job's own exit status comes back
    assert time.time() - t_start > 1.0  # it had to wait for the failed job's slots
    assert len((fake_gpus / "b").read_text().split(",")) == 2


def test_killed_job_releases_its_slots(fake_gpus):
    job = launch(fake_gpus / "k", 4, 60)
    wait_for([fake_gpus / "k"])
    job.kill()
    job.wait(10)
    # the wrapper is gone: its flock is dropped by the kernel; orphans do not hold the lock file
    with acquire(4, timeout=10) as ids:
        assert sorted(ids) == ["0", "1", "2", "3"]


def test_in_process_acquire_is_exclusive(fake_gpus):
    with acquire(3) as a:
        with acquire(1) as b:
            assert not set(a) & set(b)
        with pytest.raises(TimeoutError):
            with acquire(2, timeout=0.3):
                pass


def test_asking_for_more_than_exists(fake_gpus):
    with pytest.raises(ConfigError, match="asks for 5 GPU"):
        with acquire(5):
            pass


def test_zero_gpus_and_slurm_pass_through(fake_gpus, monkeypatch):
    out = subprocess.run([sys.executable, "-m", "gluerl.gpus", "--count", "0", "--", sys.executable, "-c",
                          "import os; print(repr(os.environ.get('CUDA_VISIBLE_DEVICES')))"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "''"
    env = dict(os.environ, SLURM_JOB_ID="42", CUDA_VISIBLE_DEVICES="5,6")
    out = subprocess.run([sys.executable, "-m", "gluerl.gpus", "--count", "2", "--", sys.executable, "-c",
                          "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"],
                         capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "5,6"  # SLURM's allocation is used as it is


def _job_threads(extra_env: dict[str, str], *flags: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(extra_env)
    out = subprocess.run([sys.executable, "-m", "gluerl.gpus", "--count", "0", *flags, "--", sys.executable, "-c",
                          "import os; print(os.environ.get('OMP_NUM_THREADS'), os.environ.get('MKL_NUM_THREADS'))"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_job_gets_its_rules_threads():
    """Snakemake's {threads} reaches the job as OMP/MKL thread counts (else torch takes every core
    for every job, and two jobs side by side fight over them)."""
    assert _job_threads({}, "--threads", "1") == "1 1"
    assert _job_threads({}, "--threads", "3") == "3 3"


def test_exported_thread_count_wins_and_none_is_left_alone():
    assert _job_threads({"OMP_NUM_THREADS": "2"}, "--threads", "1") == "2 1"
    assert _job_threads({}) == "None None"


def test_default_profile_runs_model_jobs_on_one_thread_each():
    """The workstation profile gives every model job one thread, so `--cores 2` runs two side by side."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    prof = yaml.safe_load((root / "profiles/default/config.yaml").read_text())
    threads = prof["set-threads"]
    rules = (root / "rules").glob("*.smk")
    launched = set()
    for f in rules:
        for block in re.split(r"\n(?=rule |use rule )", "\n" + f.read_text())[1:]:
            m = re.match(r"rule (\w+):|use rule (\w+) as (\w+) with:", block)
            name, parent = (m.group(1), None) if m.group(1) else (m.group(3), m.group(2))
            # a derived rule (use rule ... with:) launches as its parent unless it says otherwise
            if "launch=launcher" in block or "gpus=gpu_slots" in block or parent in launched:
                launched.add(name)
    assert launched and launched == set(threads), (launched, threads)
    assert all(v == 1 for v in threads.values())
