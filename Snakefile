# gluerl: GLUE/SuperGLUE as reinforcement-learning episodes for LLMs (arXiv 2410.11020).
#
#   snakemake results/tables/glue.csv --cores 8 --resources gpu=4
#
# This file only wires the stages together; the logic lives in the `gluerl` package, the commands
# in scripts/, helpers and target lists in rules/common.smk, the experiment in config/.
import os

from snakemake.utils import min_version

min_version("9.0")


# `snakemake --report report.html`: this description, then the tables, charts and training
# curves marked with report() in rules/, each with its caption from report/.
report: "report/workflow.rst"


# The experiment: $GLUERL_CONFIG (inherited by local and SLURM jobs alike) or the demo; overlays
# such as config/offline.yaml go on top with --configfile.
configfile: os.environ.get("GLUERL_CONFIG", "config/config.yaml")


# first: validates the config against gluerl's schema (one line a problem) and fills its defaults
include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/prompts.smk"
include: "rules/models.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/tables.smk"
include: "rules/plots.smk"
include: "rules/transfer.smk"
include: "rules/submissions.smk"


rule all:
    input:
        table_targets(),
        transfer_targets(),
    default_target: True


# leaderboard archives of every method, model and seed (test-set predictions; not part of `all`)
rule submissions:
    input:
        submission_targets(),
