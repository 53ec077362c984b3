rule assemble_table:
    input:
        results=table_inputs,
        predictions=table_predictions,
    output:
        csv="results/tables/{benchmark}.csv",
        markdown="results/tables/{benchmark}.md",
        png="results/tables/{benchmark}.png",
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
        "GLUERL_RULE=assemble_table python -m gluerl.job --keep {output.csv} --keep {output.markdown} --keep {output.png} --keep {output.metrics} "
        "--inputs {input} -- python scripts/assemble_table.py --config-json {params.cfg:q} --benchmark {wildcards.benchmark} "
        "--csv {output.csv} --markdown {output.markdown} --png {output.png} --metrics {output.metrics} {input.results} {input.predictions} > {log} 2>&1"
