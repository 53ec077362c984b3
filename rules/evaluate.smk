rule evaluate_model:
    input:
        unpack(eval_inputs),
    output:
        result="results/eval/{method}/{model}/seed{seed}/{task}.json",
        predictions="results/eval/{method}/{model}/seed{seed}/{task}.predictions.jsonl",
    log:
        "logs/evaluate_model/{method}/{model}/seed{seed}/{task}.log",
    benchmark:
        "results/benchmarks/evaluate_model/{method}/{model}/seed{seed}/{task}.tsv"
    params:
        cfg=stage_config("evaluate_model"),
        flags=eval_flags,
        gpus=gpu_slots,
    threads: 2
    resources:
        mem_mb=16000,
        gpu=1,
    conda:
        "../envs/torch.yaml"
    shell:
        "GLUERL_RULE=evaluate_model python -m gluerl.job --keep {output.result} --keep {output.predictions} --inputs {input} -- "
        "{params.gpus} python scripts/evaluate.py --config-json {params.cfg:q} --task {wildcards.task} "
        "--method {wildcards.method} --model {wildcards.model} --seed {wildcards.seed} "
        "--model-dir {input.model} {params.flags} --output {output.result} "
        "--predictions {output.predictions} > {log} 2>&1"
