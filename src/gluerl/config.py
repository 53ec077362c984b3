"""Experiment configuration: load, fill defaults from the JSON schema, validate, check names.

The schema (``gluerl/schemas/config.schema.yaml``) is the one description of every key; the
Snakefile validates against the same file. Scripts take ``--config FILE`` and ``--config-json
JSON`` (what Snakemake passes: exactly the sections a rule reads), merged in that order.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators

from .errors import ConfigError

SCHEMA_PATH = Path(str(resources.files("gluerl") / "schemas" / "config.schema.yaml"))
# data.source: embedded reads {EMBEDDED_DIR}/{task}/{split}.jsonl (the demo sample; see its README)
EMBEDDED_DIR = Path(str(resources.files("gluerl") / "embedded"))
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _with_defaults(cls):
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


_Validator = _with_defaults(Draft202012Validator)


def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "models":
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _message(e) -> str:
    """One line for a schema error: the key path, and for an unknown key the nearest known one."""
    key = ".".join(str(p) for p in e.absolute_path)
    if e.validator == "additionalProperties" and isinstance(e.instance, dict):
        known = sorted((e.schema.get("properties") or {}))
        parts = []
        for extra in sorted(set(e.instance) - set(known)):
            if e.schema.get("patternProperties") and any(re.search(p, extra) for p in e.schema["patternProperties"]):
                continue
            near = difflib.get_close_matches(str(extra), known, n=1, cutoff=0.6)
            where = f"{key}.{extra}" if key else str(extra)
            parts.append(f"{where}: unknown key" + (f" (did you mean {near[0]!r}?)" if near
                                                     else f"; known: {', '.join(known)}"))
        if parts:
            return "; ".join(parts)
    message = e.message if len(e.message) <= 200 else e.message[:200] + "..."
    return f"{key or '(top level)'}: {message}"


def validate(cfg: dict, source: str = "config") -> dict:
    """Fill defaults in place and validate; each error is one line naming the key (a did-you-mean for typos)."""
    errors = sorted(_Validator(schema()).iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {_message(e)}" for e in errors[:10]]
        if len(lines) == 1:
            raise ConfigError(f"{source}: {lines[0].strip()}")
        raise ConfigError(f"{source} is not valid:\n" + "\n".join(lines))
    # a second pass fills defaults that appeared inside defaults (e.g. ppo.reward)
    for e in _Validator(schema()).iter_errors(cfg):
        raise ConfigError(f"{source}: {e.message}")
    return cfg


def section(name: str, values: Any = None, source: str = "config") -> Any:
    """One top-level section (``evaluation``, ``sft``, ``transfer``, ...) validated, with the schema's
    defaults filled in (``None``: the section's default): code that takes a section reads its keys
    with ``[]`` and never repeats a default."""
    return validate({name: copy.deepcopy(values)} if values is not None else {}, source)[name]


def model_spec(name: str, spec: dict | None = None, source: str = "config") -> dict:
    """One ``models.NAME`` entry validated against the schema's model entry, with its defaults
    (``trust_remote_code``, ``allow_pickle``, ``revision``) filled in; a bad value is one line
    naming ``models.NAME.KEY``. Which source (hub, path or gguf) is checked by ``models.check_source``."""
    return section("models", {name: spec if spec is not None else {}}, source)[name]


def embedded_splits() -> dict[str, list[str]]:
    """Task -> splits shipped in the package for ``data.source: embedded``."""
    if not EMBEDDED_DIR.is_dir():
        return {}
    return {d.name: sorted(f.stem for f in d.glob("*.jsonl"))
            for d in sorted(EMBEDDED_DIR.iterdir()) if d.is_dir() and any(d.glob("*.jsonl"))}


def check_names(cfg: dict, source: str = "config") -> None:
    """Checks the schema cannot express: task names exist, model names are path-safe."""
    from .models import check_source
    from .tasks import registry

    tasks = registry(cfg["task_files"])
    unknown = [t for t in cfg["tasks"] if t not in tasks]
    if unknown:
        raise ConfigError(f"{source}: tasks: unknown task(s) {unknown}; known: {', '.join(sorted(tasks))}")
    for name, spec in cfg["models"].items():
        if not NAME_RE.match(name):
            raise ConfigError(f"{source}: models.{name}: use letters, digits, '.', '_' and '-' only")
        check_source(name, spec)
    uri = cfg["mlflow"]["tracking_uri"] or ""
    if re.search(r"://[^/@\s]+@", uri):
        # config sections travel as job parameters (command lines, Snakemake's metadata): no secrets in them
        raise ConfigError(f"{source}: mlflow.tracking_uri holds credentials (user:password@); give them as "
                          "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or in $MLFLOW_TRACKING_URI) instead")
    if cfg["data"]["source"] == "local":
        d = cfg["data"]["local_dir"]
        if not d:
            raise ConfigError(f"{source}: data.local_dir must be set when data.source is 'local'")
        if not Path(d).is_dir():
            raise ConfigError(f"{source}: data.local_dir: folder {d} does not exist")
    if cfg["data"]["source"] == "embedded":
        shipped = embedded_splits()
        for name in cfg["tasks"]:
            task = tasks[name]
            train = tasks[task.train_task] if task.train_task else task  # few-shot demonstrations, training
            needed = [(train.name, train.train_split)] + [(name, s) for s in task.eval_splits]
            missing = [f"{t}/{s}" for t, s in needed if s not in shipped.get(t, [])]
            if missing:
                have = "; ".join(f"{t}: {', '.join(s)}" for t, s in shipped.items()) or "nothing"
                raise ConfigError(f"{source}: data.source: embedded ships only the demo sample ({have}); "
                                  f"tasks: {name} needs {', '.join(missing)}: use data.source: hub or local for it")


def load_config(path: str | Path | None = None, overrides: dict | str | None = None, check: bool = False) -> dict:
    """Config from a YAML file and/or a JSON override, with defaults filled (and names checked if ``check``).

    Stage scripts leave ``check`` off: they get only the sections they read, and each checks the
    names it uses; the workflow checks the whole experiment before planning.
    """
    cfg: dict[str, Any] = {}
    source = "config"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            cfg = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path}: not valid YAML: {e}") from e
        if not isinstance(cfg, dict):
            raise ConfigError(f"config file {path}: expected a mapping at the top level")
        source = str(path)
    if overrides:
        if isinstance(overrides, str):
            try:
                overrides = json.loads(overrides)
            except json.JSONDecodeError as e:
                raise ConfigError(f"--config-json is not valid JSON: {e}") from e
        cfg = deep_merge(cfg, overrides)
    validate(cfg, source)
    if check:
        check_names(cfg, source)
    return cfg
