rule format_prompts:
    input:
        unpack(prompt_inputs),
    output:
        "data/prompts/{template}/{task}/{split}.jsonl",
    log:
        "logs/format_prompts/{template}/{task}/{split}.log",
    params:
        cfg=stage_config("format_prompts"),
        train=train_flag,
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/core.yaml"
    shell:
        "python -m gluerl.job -- python scripts/format_prompts.py --config-json {params.cfg:q} --task {wildcards.task} "
        "--template {wildcards.template} --input {input.split} {params.train} --output {output} > {log} 2>&1"
