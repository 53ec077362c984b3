# Training stages. Outputs are files inside the checkpoint folder (not the folder itself), so a
# rerun after an interruption finds the folder's intermediate checkpoints and resumes from them.
# Priorities: among the jobs that can start, Snakemake takes the longest chains first - SFT (it
# unlocks SFT->PPO and SFT's evaluations), then SFT->PPO, GRPO (the longest job), PPO - and the
# evaluations (priority 0) fill the gaps. Without them the 2-core reproduction started its last
# SFT->PPO at minute 51 and left one core idle for the last 8.5 minutes.
rule train_sft:
    input:
        unpack(train_prompts),
        model="results/models/{model}",
    output:
        adapter="results/checkpoints/sft/{model}/{train_set}/seed{seed}/adapter_model.safetensors",
        summary="results/checkpoints/sft/{model}/{train_set}/seed{seed}/train_summary.json",
    log:
        "logs/train_sft/{model}/{train_set}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train_sft/{model}/{train_set}/seed{seed}.tsv"
    params:
        rule="train_sft",  # GLUERL_RULE: Snakemake's linter refuses {rule} in a shell command
        script="scripts/train_sft.py",
        cfg=stage_config("train_sft"),
        prompts=prompts_flags,
        init="",
        launch=launcher,
    threads: 2
    resources:
        mem_mb=16000,
        gpu=1,
    conda:
        "../envs/torch.yaml"
    priority: 40
    shell:
        "GLUERL_RULE={params.rule} python -m gluerl.job --keep $(dirname {output.adapter}) --inputs {input} -- "
        "{params.launch} {params.script} --config-json {params.cfg:q} --model-dir {input.model} "
        "{params.prompts} {params.init}--output-dir $(dirname {output.adapter}) --seed {wildcards.seed} > {log} 2>&1"


# The other methods are train_sft with their own outputs, script, config and priority.
use rule train_sft as train_ppo with:
    output:
        adapter="results/checkpoints/ppo/{model}/{train_set}/seed{seed}/adapter_model.safetensors",
        summary="results/checkpoints/ppo/{model}/{train_set}/seed{seed}/train_summary.json",
    log:
        "logs/train_ppo/{model}/{train_set}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train_ppo/{model}/{train_set}/seed{seed}.tsv"
    params:
        rule="train_ppo",
        script="scripts/train_ppo.py",
        cfg=stage_config("train_ppo"),
        prompts=prompts_flags,
        init="",
        launch=launcher,
    priority: 10


# PPO from the SFT adapter of the same model, train set and seed (KL to it)
use rule train_sft as train_sft_ppo with:
    input:
        unpack(train_prompts),
        model="results/models/{model}",
        init=sft_adapter,
    output:
        adapter="results/checkpoints/sft_ppo/{model}/{train_set}/seed{seed}/adapter_model.safetensors",
        summary="results/checkpoints/sft_ppo/{model}/{train_set}/seed{seed}/train_summary.json",
    log:
        "logs/train_sft_ppo/{model}/{train_set}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train_sft_ppo/{model}/{train_set}/seed{seed}.tsv"
    params:
        rule="train_sft_ppo",
        script="scripts/train_ppo.py",
        cfg=stage_config("train_sft_ppo"),
        prompts=prompts_flags,
        init=init_adapter_flag,
        launch=launcher,
    priority: 30


use rule train_sft as train_grpo with:
    output:
        adapter="results/checkpoints/grpo/{model}/{train_set}/seed{seed}/adapter_model.safetensors",
        summary="results/checkpoints/grpo/{model}/{train_set}/seed{seed}/train_summary.json",
    log:
        "logs/train_grpo/{model}/{train_set}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train_grpo/{model}/{train_set}/seed{seed}.tsv"
    params:
        rule="train_grpo",
        script="scripts/train_grpo.py",
        cfg=stage_config("train_grpo"),
        prompts=prompts_flags,
        init="",
        launch=launcher,
    priority: 20
