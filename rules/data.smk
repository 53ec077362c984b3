rule download_dataset:
    output:
        "data/raw/{task}/{split}.jsonl",
    log:
        "logs/download_dataset/{task}/{split}.log",
    params:
        cfg=stage_config("download_dataset"),
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/core.yaml"
    shell:
        "python -m gluerl.job -- python scripts/download_dataset.py --config-json {params.cfg:q} "
        "--task {wildcards.task} --split {wildcards.split} --output {output} > {log} 2>&1"
