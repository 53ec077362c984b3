"""The ``gluerl`` command and the scripts' shared plumbing: --version, quiet library warnings."""

import subprocess
import sys
import warnings

import gluerl
from gluerl import cli
from gluerl.gpus import accelerate_command


def test_version():
    proc = subprocess.run([sys.executable, "-m", "gluerl.command", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"gluerl {gluerl.__version__}"


def test_library_future_warnings_are_hidden_ours_are_not():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cli.quiet_library_warnings()
        for module in ("transformers.modeling_utils", "trl", "peft.tuners.lora"):
            warnings.warn_explicit("old API", FutureWarning, "x.py", 1, module=module)
        warnings.warn_explicit("ours", FutureWarning, "x.py", 1, module="gluerl.ppo")
        warnings.warn_explicit("a user's", UserWarning, "x.py", 1, module="transformers.trainer")
    assert [str(w.message) for w in seen] == ["ours", "a user's"]


def test_accelerate_is_told_the_precision_unless_a_config_says_it():
    cmd = accelerate_command(["train.py"], 1)
    assert cmd[cmd.index("--mixed_precision") + 1] == "no"
    assert "--mixed_precision" not in accelerate_command(["train.py"], 2, "config/accelerate/x.yaml")
