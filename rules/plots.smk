rule plot_training:
    input:
        training_summaries,
    output:
        curves=report(
            directory("results/plots/training"),
            patterns=["{setup}.png"],
            caption="../report/training_setup.rst",
            category="Training",
            subcategory="per setup",
            labels={"setup": "{setup}"},
        ),
        png=report(
            "results/plots/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
            subcategory="overview",
            labels={"setup": "all"},
        ),
        svg="results/plots/training_curves.svg",
    log:
        "logs/plot_training/plot_training.log",
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/core.yaml"
    shell:
        "python -m gluerl.job -- python scripts/plot_training.py --out-dir {output.curves} --png {output.png} {input} > {log} 2>&1"
