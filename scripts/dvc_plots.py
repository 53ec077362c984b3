"""``dvc plots show`` that works offline: the page carries Vega inline instead of loading it from a CDN.

    python scripts/dvc_plots.py --out dvc_plots            # every plot in dvc.yaml -> dvc_plots/index.html
    python scripts/dvc_plots.py --out dvc_plots -- training_reward

Arguments after ``--`` go to ``dvc plots show`` (plot ids, ``--json``, ...). The template (Vega,
Vega-Lite and vega-embed from the installed Snakemake, see ``gluerl.dvcplots``) is written to
``--template`` first; the command fails if the page would still load a script from elsewhere.
"""

from __future__ import annotations

import argparse

from gluerl import cli
from gluerl.dvcplots import show


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="dvc_plots", help="output folder (default dvc_plots, git-ignored)")
    p.add_argument("--template", default=".dvc/tmp/offline-plots.html",
                   help="where to write the HTML template (default .dvc/tmp/offline-plots.html, git-ignored)")
    p.add_argument("extra", nargs="*", help="arguments for dvc plots show (after --)")
    args = p.parse_args(argv)
    index = show(args.out, args.template, args.extra)
    print(f"offline plots: {index}")


if __name__ == "__main__":
    cli.run(main)
