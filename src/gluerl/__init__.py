"""gluerl: GLUE/SuperGLUE as reinforcement-learning episodes for LLMs (arXiv 2410.11020).

The package holds the logic; ``scripts/`` are thin command-line entry points and the Snakemake
workflow only wires them together. Modules: ``tasks`` (registry), ``data``, ``prompts``,
``parsing``, ``rewards``, ``metrics``, ``models``, ``generation``, ``evaluation``, ``tables``,
``sft``, ``ppo``, ``grpo``, ``tracking``, ``config``.
"""

__version__ = "0.1.0"
