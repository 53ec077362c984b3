"""Every workflow file is as ``snakefmt`` writes it, with the repository's settings (pyproject.toml:
line length 120, directives in the house order: input, output, log, benchmark, params, threads,
resources, conda, then the rest). Skipped where snakefmt is not installed (``pip install snakefmt``)."""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEFMT = shutil.which("snakefmt")
pytestmark = pytest.mark.skipif(SNAKEFMT is None, reason="snakefmt is not installed (pip install snakefmt)")


def check(*paths, cwd=REPO):
    return subprocess.run([SNAKEFMT, "--config", str(REPO / "pyproject.toml"), "--check", *map(str, paths)],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def test_workflow_files_are_snakefmt_clean():
    proc = check("Snakefile", "rules/")
    assert proc.returncode == 0, proc.stdout + proc.stderr + "\n(run: snakefmt Snakefile rules/)"


def test_a_rule_out_of_the_house_order_fails(tmp_path):
    smk = tmp_path / "bad.smk"
    smk.write_text('rule a:\n    output:\n        "a.txt",\n    conda:\n        "envs/core.yaml"\n'
                   '    threads: 1\n    shell:\n        "touch {output}"\n')
    assert check(smk, cwd=tmp_path).returncode == 1  # conda before threads
    smk.write_text('rule a:\n    output:\n        "a.txt",\n    threads: 1\n    conda:\n        "envs/core.yaml"\n'
                   '    shell:\n        "touch {output}"\n')
    assert check(smk, cwd=tmp_path).returncode == 0
