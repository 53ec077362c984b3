"""gluerl.job: a job dies with the process that started it, and a failed redo never loses its last good outputs."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

JOB = [sys.executable, "-m", "gluerl.job"]

# a stand-in for a stage script: counts its runs, fails with --fail, else writes its output at the end
STAGE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    out, value = sys.argv[1], sys.argv[2]
    runs = Path("runs"); runs.write_text(str(int(runs.read_text() or 0) + 1) if runs.exists() else "1")
    time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 0)
    if value == "fail":
        sys.exit("error: prompt over the context (context_overflow: error)")
    Path(out).write_text(value)
""")


def _job(cwd, *args, keep=("out.json",), inputs=("in.txt",)):
    cmd = [*JOB, *(f"--keep={k}" for k in keep), "--inputs", *inputs, "--", sys.executable, "stage.py", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)


def _runs(cwd):
    return int((cwd / "runs").read_text())


def test_last_good_outputs_survive_a_failed_redo(tmp_path):
    (tmp_path / "stage.py").write_text(STAGE)
    (tmp_path / "in.txt").write_text("input")
    out = tmp_path / "out.json"
    assert _job(tmp_path, "out.json", "good").returncode == 0 and out.read_text() == "good"
    assert _runs(tmp_path) == 1
    out.unlink()  # Snakemake deletes a job's outputs before it redoes it
    failed = _job(tmp_path, "out.json", "fail")  # the redo, with other settings, fails
    assert failed.returncode == 1 and not out.exists() and _runs(tmp_path) == 2
    # back to the settings that worked: the outputs come back without running the command
    back = _job(tmp_path, "out.json", "good")
    assert back.returncode == 0 and out.read_text() == "good", back.stderr
    assert "restored" in back.stderr and _runs(tmp_path) == 2
    # another input is another job: it runs
    (tmp_path / "in.txt").write_text("other input")
    assert _job(tmp_path, "out.json", "good").returncode == 0 and _runs(tmp_path) == 3
    # and so does the same job when asked to recompute
    proc = subprocess.run([*JOB, "--keep=out.json", "--inputs", "in.txt", "--", sys.executable, "stage.py",
                           "out.json", "good"], cwd=tmp_path, env={**os.environ, "GLUERL_NO_RESTORE": "1"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and _runs(tmp_path) == 4


def test_outputs_of_a_failed_run_are_never_kept(tmp_path):
    (tmp_path / "stage.py").write_text(STAGE)
    (tmp_path / "in.txt").write_text("input")
    (tmp_path / "out.json").write_text("stale")  # left from somewhere; the command fails
    assert _job(tmp_path, "out.json", "fail").returncode == 1
    assert not (tmp_path / ".gluerl").exists()


def _starter(tmp_path, wrapped: bool, delay: float = 6.0) -> subprocess.Popen:
    """A stand-in for Snakemake: starts the job through bash -c, as Snakemake does, and waits."""
    inner = f"{sys.executable} stage.py out.json done {delay}"
    job = f"{' '.join(JOB)} --keep out.json -- {inner}" if wrapped else inner
    code = f"import subprocess; subprocess.call(['bash', '-c', 'set -euo pipefail; {job}'])"
    return subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ})


def _stage_pids():
    out = subprocess.run(["pgrep", "-f", "stage.py out.json done"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _wait(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process tree via /proc")
@pytest.mark.parametrize("wrapped", [False, True], ids=["bare_job_outlives_snakemake", "gluerl_job_dies_with_it"])
def test_job_dies_with_snakemake(tmp_path, wrapped):
    (tmp_path / "stage.py").write_text(STAGE)
    starter = _starter(tmp_path, wrapped)
    try:
        assert _wait(lambda: (tmp_path / "runs").exists()), "the job did not start"
        starter.send_signal(signal.SIGKILL)  # kill -9 of Snakemake
        starter.wait()
        gone = _wait(lambda: not _stage_pids(), timeout=4.0)
        time.sleep(6.5)  # past the moment the job would have written its output
        if wrapped:
            assert gone and not (tmp_path / "out.json").exists() and not (tmp_path / ".gluerl").exists()
        else:  # the failure the wrapper exists for: an orphan that writes its output later
            assert not gone and (tmp_path / "out.json").read_text() == "done"
    finally:
        for pid in _stage_pids():
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG")
def test_killing_the_wrapper_kills_the_job(tmp_path):
    (tmp_path / "stage.py").write_text(STAGE)
    wrapper = subprocess.Popen([*JOB, "--keep", "out.json", "--", sys.executable, "stage.py", "out.json", "done", "6"],
                               cwd=tmp_path)
    try:
        assert _wait(lambda: (tmp_path / "runs").exists())
        wrapper.send_signal(signal.SIGKILL)
        wrapper.wait()
        assert _wait(lambda: not _stage_pids(), timeout=4.0)
        time.sleep(6.5)
        assert not (tmp_path / "out.json").exists()
    finally:
        for pid in _stage_pids():
            os.kill(pid, signal.SIGKILL)
