rule assemble_table:
    input:
        results=table_inputs,
        predictions=table_predictions,
    output:
        csv=report(
            "results/tables/{benchmark}.csv",
            caption="../report/table.rst",
            category="Tables",
            subcategory="{benchmark}",
            labels={"benchmark": "{benchmark}", "figure": "table"},
        ),
        markdown="results/tables/{benchmark}.md",
        png=report(
            "results/tables/{benchmark}.png",
            caption="../report/chart.rst",
            category="Tables",
            subcategory="{benchmark}",
            labels={"benchmark": "{benchmark}", "figure": "chart"},
        ),
        svg="results/tables/{benchmark}.svg",
        metrics="results/tables/{benchmark}.json",
    log:
        "logs/assemble_table/{benchmark}.log",
    params:
        cfg=stage_config("assemble_table"),
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/core.yaml"
    shell:
        "GLUERL_RULE=assemble_table python -m gluerl.job --keep {output.csv} --keep {output.markdown} --keep {output.png} --keep {output.svg} --keep {output.metrics} "
        "--inputs {input} -- python scripts/assemble_table.py --config-json {params.cfg:q} --benchmark {wildcards.benchmark} "
        "--csv {output.csv} --markdown {output.markdown} --png {output.png} --metrics {output.metrics} {input.results} {input.predictions} > {log} 2>&1"
