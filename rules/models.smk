rule prepare_model:
    output:
        directory("results/models/{model}"),
    log:
        "logs/prepare_model/{model}.log",
    benchmark:
        "results/benchmarks/prepare_model/{model}.tsv"
    params:
        cfg=stage_config("prepare_model"),
    threads: 2
    resources:
        mem_mb=16000,
    conda:
        "../envs/torch.yaml"
    shell:
        "python -m gluerl.job -- python scripts/prepare_model.py --config-json {params.cfg:q} --model {wildcards.model} "
        "--output {output} > {log} 2>&1"
