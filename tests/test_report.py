"""The Snakemake report's wiring: the ``report:`` directive, a caption for every ``report()`` output,
and every caption renders (Jinja, as Snakemake renders it, then reStructuredText with no warning)
on the shipped configs. ``tests/test_workflow.py`` builds the report of a finished tiny run."""

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from gluerl.config import load_config

REPO = Path(__file__).resolve().parents[1]
RULES = sorted((REPO / "rules").glob("*.smk"))
CAPTION = re.compile(r'caption="\.\./(report/[\w.-]+\.rst)"')
CONFIGS = ["config/config.yaml", "config/transfer-example.yaml", "config/glue-full-eval.yaml"]


def captions() -> dict[str, set[str]]:
    """caption file -> the rules files that name it."""
    out: dict[str, set[str]] = {}
    for smk in RULES:
        for path in CAPTION.findall(smk.read_text()):
            out.setdefault(path, set()).add(smk.name)
    return out


def render(path: str, config: dict, root: Path = REPO, **wildcards) -> str:
    """A caption as ``snakemake --report`` renders it: Jinja with ``snakemake.config`` and
    ``.wildcards``, then docutils (here with every warning an error)."""
    import jinja2
    from docutils.core import publish_parts

    snakemake = SimpleNamespace(config=config, wildcards=SimpleNamespace(**wildcards))
    text = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string((root / path).read_text()).render(
        snakemake=snakemake)
    return publish_parts(text, writer="html", settings_overrides={"halt_level": 2, "report_level": 2})["body"]


def test_snakefile_names_the_workflow_description():
    assert re.search(r'^report: "report/workflow\.rst"$', (REPO / "Snakefile").read_text(), re.M)
    assert (REPO / "report" / "workflow.rst").is_file()


def test_every_report_output_has_a_caption_and_every_caption_is_used():
    found = captions()
    assert {"report/table.rst", "report/chart.rst", "report/training_curves.rst"} <= set(found)
    for path in found:
        assert (REPO / path).is_file(), path
    shipped = {f"report/{p.name}" for p in (REPO / "report").glob("*.rst")} - {"report/workflow.rst"}
    assert shipped == set(found)
    for smk in RULES:  # one report() per caption; none without one
        text = smk.read_text()
        assert text.count("report(") == len(CAPTION.findall(text)), smk.name


@pytest.mark.parametrize("config_file", CONFIGS)
def test_captions_render_with_the_config(config_file):
    cfg = load_config(REPO / config_file)
    html = render("report/workflow.rst", cfg)
    assert ", ".join(cfg["tasks"]) in html and cfg["data"]["source"] in html
    reward = cfg["ppo"]["reward"]  # the rule as configured (it said -1.5 for an unparseable answer, the default is -3)
    assert f"{reward['correct']} right, {reward['wrong']} wrong, {reward['invalid']} for an answer" in " ".join(html.split())
    for path in captions():
        html = render(path, cfg, benchmark="glue", setup="ppo-tiny-sst2")
        assert "Made" in html or "Same records" in html, path  # says what made it
    table = render("report/table.rst", cfg, benchmark="glue")
    assert "GLUE table" in table and ", ".join(cfg["methods"]) in table
    if cfg["tables"]["reference_method"] in cfg["methods"]:
        assert f"minus <tt class=\"docutils literal\">{cfg['tables']['reference_method']}</tt>" in table
    if cfg["transfer"]:
        assert all(t["name"] in render("report/transfer_table.rst", cfg) for t in cfg["transfer"])


def test_a_broken_caption_is_caught(tmp_path):
    """The check above fails on what would render badly: an unknown config key, broken markup."""
    import jinja2

    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "bad.rst").write_text("{{ snakemake.config['no_such_key'] }}\n")
    with pytest.raises(jinja2.UndefinedError):
        render("report/bad.rst", {}, tmp_path)
    (tmp_path / "report" / "bad.rst").write_text("An ``unclosed literal\n")
    with pytest.raises(Exception, match="literal"):
        render("report/bad.rst", {}, tmp_path)
