# Transfer evaluation: each method's model for a source task (its checkpoint, or the multi-task
# one) answers the target datasets of the config's `transfer` list with the source task's prompt.
# Target: `snakemake --cores 8 results/tables/transfer.csv` (also in `all` when targets are set).
rule download_transfer:
    output:
        "data/transfer/{target}.jsonl",
    log:
        "logs/download_transfer/{target}.log",
    params:
        cfg=stage_config("download_transfer"),
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/core.yaml"
    shell:
        "python -m gluerl.job -- python scripts/download_transfer.py --config-json {params.cfg:q} --target {wildcards.target} "
        "--output {output} > {log} 2>&1"


rule format_transfer_prompts:
    input:
        unpack(transfer_prompt_inputs),
    output:
        "data/transfer/prompts/{template}/{target}.jsonl",
    log:
        "logs/format_transfer_prompts/{template}/{target}.log",
    params:
        cfg=stage_config("format_transfer_prompts"),
        source=transfer_source,
        train=train_flag,
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/core.yaml"
    shell:
        "python -m gluerl.job -- python scripts/format_prompts.py --config-json {params.cfg:q} --task {params.source} "
        "--template {wildcards.template} --input {input.split} {params.train} --output {output} > {log} 2>&1"


rule evaluate_transfer:
    input:
        unpack(transfer_eval_inputs),
    output:
        result="results/transfer/{method}/{model}/seed{seed}/{target}.json",
        predictions="results/transfer/{method}/{model}/seed{seed}/{target}.predictions.jsonl",
    log:
        "logs/evaluate_transfer/{method}/{model}/seed{seed}/{target}.log",
    benchmark:
        "results/benchmarks/evaluate_transfer/{method}/{model}/seed{seed}/{target}.tsv"
    params:
        cfg=stage_config("evaluate_transfer"),
        adapter=transfer_adapter_flag,
        gpus=gpu_slots,
    threads: 2
    resources:
        mem_mb=16000,
        gpu=1,
    conda:
        "../envs/torch.yaml"
    shell:
        "GLUERL_RULE=evaluate_transfer python -m gluerl.job --keep {output.result} --keep {output.predictions} --inputs {input} -- "
        "{params.gpus} python scripts/evaluate_transfer.py --config-json {params.cfg:q} "
        "--target {wildcards.target} --method {wildcards.method} --model {wildcards.model} --seed {wildcards.seed} "
        "--model-dir {input.model} {params.adapter} --prompts {input.prompts} --output {output.result} "
        "--predictions {output.predictions} > {log} 2>&1"


# results/tables/transfer.* would also match assemble_table's results/tables/{benchmark}.*
ruleorder: assemble_transfer_table > assemble_table


rule assemble_transfer_table:
    input:
        transfer_table_inputs,
    output:
        csv=report(
            "results/tables/transfer.csv",
            caption="../report/transfer_table.rst",
            category="Tables",
            subcategory="transfer",
            labels={"benchmark": "transfer", "figure": "table"},
        ),
        markdown="results/tables/transfer.md",
        png=report(
            "results/tables/transfer.png",
            caption="../report/transfer_chart.rst",
            category="Tables",
            subcategory="transfer",
            labels={"benchmark": "transfer", "figure": "chart"},
        ),
        svg="results/tables/transfer.svg",
        metrics="results/tables/transfer.json",
    log:
        "logs/assemble_transfer_table/transfer.log",
    params:
        cfg=stage_config("assemble_transfer_table"),
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/core.yaml"
    shell:
        "python -m gluerl.job --keep {output.csv} --keep {output.markdown} --keep {output.png} --keep {output.metrics} --inputs {input} -- "
        "python scripts/assemble_transfer_table.py --config-json {params.cfg:q} --csv {output.csv} "
        "--markdown {output.markdown} --png {output.png} --metrics {output.metrics} {input} > {log} 2>&1"
