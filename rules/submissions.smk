# Leaderboard submissions: every method's predictions on the unlabelled test splits, written in
# the format of the benchmark's server (files and label strings from the tasks' `submission:`
# blocks). Target: `snakemake --cores 8 submissions` (not part of `all`: test sets are large).
rule predict_test:
    input:
        unpack(predict_inputs),
    output:
        "results/test_predictions/{method}/{model}/seed{seed}/{task}.jsonl",
    log:
        "logs/predict_test/{method}/{model}/seed{seed}/{task}.log",
    benchmark:
        "results/benchmarks/predict_test/{method}/{model}/seed{seed}/{task}.tsv"
    params:
        cfg=stage_config("predict_test"),
        flags=eval_flags,
        gpus=gpu_slots,
    threads: 2
    resources:
        mem_mb=16000,
        gpu=1,
    conda:
        "../envs/torch.yaml"
    shell:
        "GLUERL_RULE=predict_test python -m gluerl.job --keep {output} --inputs {input} -- {params.gpus} python scripts/predict_test.py --config-json {params.cfg:q} "
        "--task {wildcards.task} --method {wildcards.method} --model {wildcards.model} --seed {wildcards.seed} "
        "--model-dir {input.model} {params.flags} --output {output} > {log} 2>&1"


rule make_submission:
    input:
        unpack(submission_inputs),
    output:
        archive="results/submissions/{method}/{model}/seed{seed}/{benchmark}.zip",
        manifest="results/submissions/{method}/{model}/seed{seed}/{benchmark}.json",
    log:
        "logs/make_submission/{method}/{model}/seed{seed}/{benchmark}.log",
    params:
        cfg=stage_config("make_submission"),
        flags=submission_flags,
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/core.yaml"
    shell:
        "python -m gluerl.job -- python scripts/make_submission.py --config-json {params.cfg:q} --benchmark {wildcards.benchmark} "
        "{params.flags} --output {output.archive} --manifest {output.manifest} > {log} 2>&1"
