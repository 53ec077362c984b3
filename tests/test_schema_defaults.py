"""No defaults repeated outside the schema (issue 18): code reads validated sections with ``[]``.

``gluerl.config.section`` and ``model_spec`` fill a section's (or a ``models.NAME`` entry's)
defaults from ``schemas/config.schema.yaml``; nothing in the package restates one as
``.get(KEY, DEFAULT)``.
"""

import ast
import json
from pathlib import Path

import pytest

from gluerl import config
from gluerl.errors import ConfigError

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gluerl"


def schema_defaults(node, out=None) -> dict[str, list]:
    """Every key of the schema that has a default -> its defaults (a key may appear in several sections)."""
    out = {} if out is None else out
    if isinstance(node, dict):
        for key, sub in (node.get("properties") or {}).items():
            if isinstance(sub, dict) and "default" in sub:
                out.setdefault(key, []).append(sub["default"])
            schema_defaults(sub, out)
        for child in ("additionalProperties", "items"):
            if isinstance(node.get(child), dict):
                schema_defaults(node[child], out)
    return out


def same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) or (
        not isinstance(a, bool) and not isinstance(b, bool) and isinstance(a, (int, float))
        and isinstance(b, (int, float)) and a == b)


def repeated_defaults(root: Path = PACKAGE) -> list[str]:
    """``.get("KEY", DEFAULT)`` calls whose KEY is a schema key and whose DEFAULT is that key's schema default."""
    defaults = schema_defaults(config.schema())
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                    and len(node.args) == 2 and isinstance(node.args[0], ast.Constant)
                    and node.args[0].value in defaults):
                continue
            try:
                value = ast.literal_eval(node.args[1])
            except ValueError:
                continue
            if any(same(value, d) for d in defaults[node.args[0].value]):
                found.append(f"{path.relative_to(root.parent)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_schema_default_is_repeated_as_a_get_default():
    assert repeated_defaults() == []


def test_the_scan_finds_a_repeated_default(tmp_path):
    (tmp_path / "m.py").write_text('x = spec.get("allow_pickle", False)\ny = cfg.get("training", {})\n'
                                   'z = ev.get("bootstrap_resamples", 0)\nrow.get("label", None)\n')
    assert [f.split(": ", 1)[1] for f in repeated_defaults(tmp_path)] == [
        "spec.get('allow_pickle', False)", "cfg.get('training', {})"]


def test_model_spec_fills_the_schema_defaults():
    assert config.model_spec("m", {"hub": "org/m"}) == {"hub": "org/m", "revision": None, "trust_remote_code": False,
                                                 "allow_pickle": False}
    spec = {"path": "/x", "allow_pickle": True}
    assert config.model_spec("m", spec)["allow_pickle"] is True and spec == {"path": "/x", "allow_pickle": True}
    assert config.model_spec("m")["trust_remote_code"] is False


@pytest.mark.parametrize("spec,message", [
    ({"hub": "org/m", "trust_remote_code": "yes"},
     r"^config: models\.m\.trust_remote_code: 'yes' is not of type 'boolean'$"),
    ({"hub": "org/m", "allow_pickel": True}, r"^config: models\.m\.allow_pickel: unknown key \(did you mean 'allow_pickle'\?\)$"),
    ({"gguf": {"package": "p"}}, r"^config: models\.m\.gguf: 'file' is a required property$"),
])
def test_model_spec_refuses_a_bad_value_in_one_line_naming_the_key(spec, message):
    with pytest.raises(ConfigError, match=message) as e:
        config.model_spec("m", spec)
    assert "\n" not in str(e.value)


def test_section_without_values_is_the_schema_default():
    assert config.section("transfer") == [] and config.section("data")["subsample_seed"] == 0
    assert config.section("mlflow", {"experiment": "e"}) == {"enabled": True, "tracking_uri": None, "experiment": "e"}


def test_prepare_model_validates_a_bare_spec_before_anything_else(tmp_path):
    from gluerl.models import prepare_model

    with pytest.raises(ConfigError, match=r"models\.m\.trust_remote_code: 'yes' is not of type 'boolean'"):
        prepare_model("m", {"path": str(tmp_path / "missing"), "trust_remote_code": "yes"}, tmp_path / "out")


def test_trusts_code_reads_the_filled_entry():
    from gluerl.evaluation import trusts_code

    cfg = {"models": {"a": {"hub": "org/a", "trust_remote_code": True}, "b": {"hub": "org/b"}}}
    assert trusts_code(cfg, "a") is True and trusts_code(cfg, "b") is False and trusts_code(cfg, "absent") is False


def test_tracker_and_training_read_filled_sections():
    from gluerl.tracking import Tracker
    from gluerl.training import mixing

    assert Tracker({"experiment": "e"}, enabled=False).cfg == {"enabled": True, "tracking_uri": None, "experiment": "e"}
    assert Tracker(None).cfg["experiment"] == "gluerl"
    assert not Tracker({"enabled": False}).enabled
    assert mixing({}) == {"task_mixing": "proportional", "mixing_temperature": 2.0}
    assert mixing({"training": {"task_mixing": "temperature"}})["task_mixing"] == "temperature"
