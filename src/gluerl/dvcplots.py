"""``dvc plots show`` without the network: an HTML template with Vega inlined.

DVC's page loads Vega, Vega-Lite and vega-embed from a CDN (``dvc_render``'s ``VegaRenderer``
puts three ``<script src=...>`` tags where the template says ``{scripts}``), so on a machine
without internet access, and for an archived copy, the plots stay blank. ``dvc plots show
--html-template FILE`` takes a page of our own: this one has no ``{scripts}`` placeholder (so the
CDN tags are never added) and carries the three libraries inline, from the copies the installed
Snakemake ships for its own reports (``snakemake.assets``: Vega 5.21, Vega-Lite 5.2, vega-embed 6.20,
each with its BSD-3-Clause licence; DVC's CDN pins Vega 5.20, Vega-Lite 5.2, vega-embed 6.18).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Sequence

from .errors import DataError

LIBRARIES = ("vega/vega.js", "vega-lite/vega-lite.js", "vega-embed/vega-embed.js")
REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", re.I)


def library(path: str) -> tuple[str, str, str]:
    """(source, licence, version) of one of Snakemake's bundled libraries."""
    from snakemake.assets import Assets

    licence = Assets.get_content(path.split("/")[0] + "/LICENSE")
    return Assets.get_content(path), licence, Assets.get_version(path) or "?"


def offline_template() -> str:
    """A page for ``dvc plots show --html-template``: ``{plot_divs}`` and the libraries inline."""
    scripts = []
    for path in LIBRARIES:
        source, licence, version = library(path)
        # a literal "</script>" inside the library would end the tag early
        source = source.replace("</script", "<\\/script")
        scripts.append(f"<!-- {path} {version}\n{licence.strip()}\n-->\n<script>\n{source}\n</script>")
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>DVC Plot (offline)</title>\n"
            + "\n".join(scripts)
            + "\n<style>table { border-spacing: 15px; }</style>\n</head>\n<body>\n{plot_divs}\n</body>\n</html>\n")


def remote_scripts(html: str) -> list[str]:
    """The ``<script src=...>`` tags of a page that load code from elsewhere."""
    return [m.group(0) for m in REMOTE_SCRIPT.finditer(html)]


def show(out_dir: str | Path, template: str | Path, extra: Sequence[str] = (), cwd: str | Path | None = None) -> Path:
    """Write the template, run ``dvc plots show --html-template`` into ``out_dir``, check the page
    loads nothing from elsewhere; returns ``out_dir/index.html``."""
    template = Path(template)
    template.parent.mkdir(parents=True, exist_ok=True)
    template.write_text(offline_template(), encoding="utf-8")
    cmd = ["dvc", "plots", "show", "--html-template", str(template.resolve()), "-o", str(out_dir), *extra]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise DataError(f"`{' '.join(cmd)}` failed: {(proc.stderr or proc.stdout).strip()[-2000:]}")
    index = (Path(cwd or ".") / out_dir / "index.html")
    remote = remote_scripts(index.read_text(encoding="utf-8"))
    if remote:
        raise DataError(f"the page still loads scripts from elsewhere: {remote}", index)
    return index
