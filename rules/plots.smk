rule plot_training:
    input:
        training_summaries,
    output:
        curves=directory("results/plots/training"),
        png="results/plots/training_curves.png",
    log:
        "logs/plot_training/plot_training.log",
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/core.yaml"
    shell:
        "python -m gluerl.job -- python scripts/plot_training.py --out-dir {output.curves} --png {output.png} {input} > {log} 2>&1"
