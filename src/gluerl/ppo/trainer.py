"""The PPO loop: :class:`PPOTrainer` takes a batch of episodes, rolls them out, scores them and runs
the update (the steps are in :mod:`gluerl.ppo`'s docstring), writes metrics and checkpoints, resumes.

The pieces it orchestrates live beside it: the losses and GAE (:mod:`.losses`), the KL controller
(:mod:`.kl`), the policy with its value head (:mod:`.policy`), the rollout record and sampling
settings (:mod:`.rollout`), the files (:mod:`.checkpoint`) and the typed ``ppo`` section (:mod:`.config`).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from ..errors import ConfigError, TrainingError
from ..parsing import CLOSE_TAG, parse_answer
from ..rewards import RewardRule, score_prediction
from ..tasks import get_task
from . import checkpoint
from .checkpoint import METRICS_FILE, model_identity
from .config import PPOConfig
from .kl import kl_controller
from .losses import (compute_rewards, entropy_from_logits, explained_variance, gae, group_advantages,
                     logprobs_from_logits, masked_mean, policy_loss, value_loss, whiten)
from .policy import REFERENCE_ADAPTER, PolicyWithValueHead
from .rollout import MIN_SHARED_PREFIX, Rollout, collapsed_answer, response_mask, sampling_config

log = logging.getLogger(__package__)


def make_optimizer(params: Iterable[nn.Parameter], ppo: PPOConfig,
                   value_params: Iterable[nn.Parameter] = ()) -> torch.optim.Optimizer:
    """``ppo.optimizer`` at the constant ``ppo.learning_rate``: AdamW, or Adafactor as the paper's code
    (``scale_parameter=False, relative_step=False, warmup_init=False``: no relative step size).

    With ``ppo.value_learning_rate`` set, ``value_params`` (the value head) form a second parameter
    group at that rate; every group's ``lr_scale`` is its rate over ``learning_rate`` (warmup scales both)."""
    params, value_params = list(params), list(value_params)
    if ppo.value_learning_rate is not None and value_params:
        params = [{"params": params, "lr_scale": 1.0},
                  {"params": value_params, "lr": ppo.value_learning_rate,
                   "lr_scale": ppo.value_learning_rate / ppo.learning_rate}]
    else:
        params = [{"params": params + value_params, "lr_scale": 1.0}]
    if ppo.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=ppo.learning_rate, scale_parameter=False, relative_step=False,
                         warmup_init=False)
    if ppo.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=ppo.learning_rate)
    raise ConfigError(f"ppo.optimizer must be adamw or adafactor, not {ppo.optimizer!r}")


class PPOTrainer:
    """PPO on ``records`` (from :func:`gluerl.training.load_train_records`) with the config's ``ppo`` section.

    >>> trainer = PPOTrainer(cfg, "results/models/m", records, "out", seed=1)   # doctest: +SKIP
    >>> summary = trainer.train()                                                # doctest: +SKIP
    """

    def __init__(self, cfg: dict[str, Any], model_dir: str | Path, records: Sequence[dict[str, Any]],
                 output_dir: str | Path, seed: int = 1, init_adapter: str | Path | None = None,
                 callbacks: Iterable[Callable[[dict], None]] = (), tokenizer=None, accelerator=None):
        from accelerate import Accelerator
        from peft import PeftModel, get_peft_model
        from transformers import AutoModelForCausalLM

        from ..models import contiguous_output_layer, load_tokenizer, resolve_dtype
        from ..training import lora_config, set_seed

        self.cfg = cfg
        self.ppo = PPOConfig.from_section(cfg["ppo"])  # raises when min_new_tokens > max_new_tokens
        if not records:
            raise ConfigError("no training records")
        self.records, self.output_dir, self.seed = list(records), Path(output_dir), int(seed)
        self.callbacks = list(callbacks)
        self.rule = RewardRule(**self.ppo.reward)
        self.tasks = {r["task"]: get_task(r["task"], cfg["task_files"]) for r in self.records}
        # (task, label id) of every classification task, in one order on every process (answer shares)
        self.label_keys = [(name, label) for name, task in sorted(self.tasks.items()) if not task.is_regression
                           for label in sorted(task.labels)]
        self.collapse: list[dict[str, Any]] = []  # answer collapses seen (collapsed_answer), for the summary
        # on a machine without CUDA, accelerate only sets up multi-process (gloo) training when told cpu=True
        self.acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
        self.main, self.rank, self.world = self.acc.is_main_process, self.acc.process_index, self.acc.num_processes
        self.device = self.acc.device

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise ConfigError(f"model folder {model_dir} has no config.json; run the prepare_model step first")
        self.tok = tokenizer or load_tokenizer(model_dir)
        dtype = resolve_dtype(cfg["training"]["dtype"], str(self.device))
        set_seed(self.seed)  # the same initial adapter and value head on every process
        base = contiguous_output_layer(AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype,
                                                                            use_safetensors=True))
        self.model_id = model_identity(base.config, model_dir)
        if init_adapter is not None:
            if not (Path(init_adapter) / "adapter_config.json").is_file():
                raise ConfigError(f"--init-adapter {init_adapter} has no adapter_config.json")
            policy = PeftModel.from_pretrained(base, str(init_adapter), is_trainable=True)
            if self.ppo.reference == "initial":  # a frozen copy of the starting adapter is the reference
                policy.load_adapter(str(init_adapter), adapter_name=REFERENCE_ADAPTER, is_trainable=False)
        else:
            policy = get_peft_model(base, lora_config(cfg["lora"]))
        gen_eos = policy.generation_config.eos_token_id
        self.eos_ids = [gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [self.tok.eos_token_id])
        # generate fills every setting its generation_config leaves unset from the model's own (a hub model's
        # repetition_penalty, temperature, top_k, ...): the rollout inherits none of them
        base.generation_config = sampling_config(self.ppo, self.eos_ids, self.tok.pad_token_id,
                                                 self.ppo.max_new_tokens)
        net = PolicyWithValueHead(policy, base.config.get_text_config().hidden_size,
                                  self.ppo.value_head_init).to(self.device)
        opt = make_optimizer([p for p in net.policy.parameters() if p.requires_grad], self.ppo,
                             net.value_head.parameters())
        self.net, self.opt = self.acc.prepare(net, opt)
        self.kl_ctl = kl_controller(self.ppo)
        self.step, self.cursor, self.train_seconds = 0, 0, 0.0
        self.last_metrics: dict[str, Any] = {}
        self.resumed_from: int | None = None
        set_seed(self.seed + self.rank)  # sampling differs between processes
        self._perm_cache: tuple[int, list[int]] | None = None
        checkpoint.resume(self)

    # -- small helpers ------------------------------------------------------------------------
    @property
    def learning_rate(self) -> float:
        """The learning rate of the update now to run (``self.step`` updates done): ``ppo.learning_rate``,
        times ``k / (warmup_steps + 1)`` for update k of the first ``warmup_steps``."""
        return self.ppo.learning_rate * min(1.0, (self.step + 1) / (self.ppo.warmup_steps + 1))

    @property
    def uses_reference(self) -> bool:
        """Whether the KL penalty needs the reference's log-probs: not at a coefficient of 0, which
        the fixed controller keeps and the adaptive one (multiplicative) cannot leave."""
        return self.kl_ctl.value != 0.0

    @property
    def model(self) -> PolicyWithValueHead:
        return self.acc.unwrap_model(self.net)

    def _info(self, msg, *args):
        if self.main:
            log.info(msg, *args)

    def _reduce(self, values: Sequence[float], op: str = "sum") -> list[float]:
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        if self.world > 1:
            t = self.acc.reduce(t, reduction=op)
        return t.tolist()

    def _reduce_named(self, values: Mapping[Any, float], op: str = "sum") -> dict[Any, float]:
        """:meth:`_reduce` of named values (names: strings or tuples), in one reduction: the same names, reduced."""
        return dict(zip(values, self._reduce(list(values.values()), op)))

    def _fail_if(self, bad: bool, what: str) -> None:
        """Raise TrainingError on every process when any process saw a non-finite value."""
        if self._reduce([float(bad)], "sum")[0] > 0:
            raise TrainingError(f"non-finite {what} at step {self.step + 1}; the last good checkpoint is kept "
                                f"(last metrics: {json.dumps(self.last_metrics)})")

    def episode_indices(self, cursor: int, count: int) -> list[int]:
        """Records at positions ``cursor .. cursor+count`` of the stream: epochs of shuffled records."""
        out = []
        for k in range(cursor, cursor + count):
            epoch, pos = divmod(k, len(self.records))
            if self._perm_cache is None or self._perm_cache[0] != epoch:
                order = list(range(len(self.records)))
                random.Random(f"{self.seed}-{epoch}").shuffle(order)
                self._perm_cache = (epoch, order)
            out.append(self._perm_cache[1][pos])
        return out

    def _answer_shares(self, records: Sequence[dict[str, Any]], preds: Sequence[Any]) -> dict[str, float | None]:
        """``pred_frac/<task>/<label word>`` and ``pred_frac/<task>/invalid`` over this step's episodes of all
        processes (None for a task without episodes this step); warns of and records answer collapse."""
        tasks = sorted({t for t, _ in self.label_keys})
        if not tasks:  # regression only (STS-B): no label words
            return {}
        n = {t: 0 for t in tasks}
        invalid = dict(n)
        pred, gold = {k: 0 for k in self.label_keys}, {k: 0 for k in self.label_keys}
        for p, r in zip(preds, records):
            if r["task"] not in n:
                continue
            n[r["task"]] += 1
            if p is None:
                invalid[r["task"]] += 1
            elif (r["task"], int(p)) in pred:
                pred[r["task"], int(p)] += 1
            if (r["task"], int(r["label"])) in gold:
                gold[r["task"], int(r["label"])] += 1
        keys = list(self.label_keys)
        sums = self._reduce_named({**{("n", t): n[t] for t in tasks}, **{("invalid", t): invalid[t] for t in tasks},
                                   **{("pred", *k): pred[k] for k in keys}, **{("gold", *k): gold[k] for k in keys}})
        n = {t: sums["n", t] for t in tasks}
        invalid = {t: sums["invalid", t] for t in tasks}
        pred = {k: sums[("pred", *k)] for k in keys}
        gold = {k: sums[("gold", *k)] for k in keys}
        out: dict[str, float | None] = {}
        for t in tasks:
            words = self.tasks[t].labels
            pred_words = {words[lab]: pred[t, lab] for tt, lab in keys if tt == t}
            gold_words = {words[lab]: gold[t, lab] for tt, lab in keys if tt == t}
            for word, count in pred_words.items():
                out[f"pred_frac/{t}/{word}"] = count / n[t] if n[t] else None
            out[f"pred_frac/{t}/invalid"] = invalid[t] / n[t] if n[t] else None
            word = collapsed_answer(pred_words, gold_words, n[t])
            if word is not None:
                self._note_collapse(t, word, pred_words[word] / n[t], max(gold_words.values()) / n[t], int(n[t]))
        return out

    def _task_metrics(self, records: Sequence[dict[str, Any]], preds: Sequence[Any], scores) -> dict[str, float | None]:
        """Multi-task training: ``task/<task>/reward_mean``, ``/accuracy`` (classification) and
        ``/invalid_rate`` over this step's episodes of that task on all processes (None without any)."""
        names = sorted(self.tasks)
        acc = {(t, k): 0.0 for t in names for k in ("reward", "episodes", "right", "invalid")}
        for r, p, sc in zip(records, preds, scores.tolist()):
            t = r["task"]
            acc[t, "reward"] += sc
            acc[t, "episodes"] += 1
            acc[t, "right"] += int(p is not None and not self.tasks[t].is_regression and int(p) == int(r["label"]))
            acc[t, "invalid"] += int(p is None)
        sums = self._reduce_named(acc)
        out: dict[str, float | None] = {}
        for t in names:
            total, n, right, invalid = (sums[t, k] for k in ("reward", "episodes", "right", "invalid"))
            out[f"task/{t}/reward_mean"] = total / n if n else None
            out[f"task/{t}/accuracy"] = None if not n or self.tasks[t].is_regression else right / n
            out[f"task/{t}/invalid_rate"] = invalid / n if n else None
        return out

    def _note_collapse(self, task: str, word: str, share: float, gold_share: float, n: int) -> None:
        """Record that ``task``'s answers collapsed onto ``word`` at this step; warn when it starts."""
        entry = next((e for e in self.collapse if e["task"] == task and e["label"] == word), None)
        if entry is None or entry["last_step"] != self.step - 1:
            if self.main:
                log.warning("step %d: answer collapse on %s: %.0f%% of %d episodes answered %r while the gold "
                            "labels are mixed (the most frequent one %.0f%%)", self.step, task, 100 * share, n,
                            word, 100 * gold_share)
        if entry is None:
            entry = {"task": task, "label": word, "first_step": self.step, "last_step": self.step, "steps": 0}
            self.collapse.append(entry)
        entry.update(last_step=self.step, steps=entry["steps"] + 1, share=share)

    # -- one step -----------------------------------------------------------------------------
    def encode_prompts(self, prompts: Sequence[str]) -> tuple[dict[str, torch.Tensor], int]:
        """``input_ids``/``attention_mask`` of ``prompts`` and the length of the start they share.

        With ``ppo.share_prefix`` (and a shared start of at least :data:`MIN_SHARED_PREFIX` tokens)
        the rows are laid out as ``[shared prefix][padding][own tokens]``, else left-padded (prefix 0).
        """
        from ..generation import common_prefix_length, shared_prefix_batch

        ids = self.tok(list(prompts), add_special_tokens=False)["input_ids"]
        prefix_len = common_prefix_length(ids) if self.ppo.share_prefix else 0
        if prefix_len < MIN_SHARED_PREFIX:
            prefix_len = 0
        return shared_prefix_batch(self.tok, ids, prefix_len, self.device), prefix_len

    @torch.no_grad()
    def rollout(self, records: Sequence[dict[str, Any]]) -> Rollout:
        """Sample completions for ``records`` and score them: everything the update needs."""
        ppo, model = self.ppo, self.model
        t0 = time.perf_counter()
        model.eval()
        enc, prefix_len = self.encode_prompts([r["prompt"] for r in records])
        max_new = random.randint(ppo.min_new_tokens, ppo.max_new_tokens)
        # the sampling pass also gives the policy's log-probs (its logits) and the values (value head on
        # its last hidden states): no second forward pass of the policy over the rollout
        gen_config = sampling_config(ppo, self.eos_ids, self.tok.pad_token_id, max_new)
        sequences, gen_logits, values = model.generate(prefix_len, **enc, generation_config=gen_config,
                                                       tokenizer=self.tok)
        response = sequences[:, enc["input_ids"].shape[1]:]
        mask = response_mask(response, self.tok, CLOSE_TAG, self.eos_ids)
        R, T, mb = response.shape[1], ppo.temperature, ppo.mini_batch_size
        # log-probs of the sampling distribution (logits / temperature), in eval mode (no dropout)
        gen_logits = gen_logits.float() / T
        logprobs, entropy = logprobs_from_logits(gen_logits, response), entropy_from_logits(gen_logits)
        del gen_logits
        t1 = time.perf_counter()

        texts = [self.tok.decode(response[b][mask[b] > 0], skip_special_tokens=True) for b in range(len(records))]
        preds = [parse_answer(text, self.tasks[r["task"]]) for text, r in zip(texts, records)]
        scores = [score_prediction(p, r["label"], self.tasks[r["task"]], self.rule) for p, r in zip(preds, records)]
        input_ids = torch.cat([enc["input_ids"], response], dim=1)
        attention_mask = torch.cat([enc["attention_mask"], torch.ones_like(response)], dim=1)
        # the reference is the same model with the reference adapter (or none), in chunks of mini_batch_size;
        # with a KL coefficient of 0 (which neither controller moves) it weighs nothing: not run, as TRL's GRPO
        # skips its reference at beta 0
        ref_logprobs = []
        for chunk in (slice(s, s + mb) for s in range(0, len(records), mb)) if self.uses_reference else ():
            ref_logits = model.reference_logits(input_ids[chunk], attention_mask[chunk], R, prefix_len)
            ref_logprobs.append(logprobs_from_logits(ref_logits.float() / T, response[chunk]))
        t2 = time.perf_counter()
        return Rollout(
            input_ids=input_ids, attention_mask=attention_mask, response=response, mask=mask.float(),
            logprobs=logprobs, ref_logprobs=torch.cat(ref_logprobs) if ref_logprobs else None, values=values,
            entropy=entropy,
            scores=torch.tensor(scores, dtype=torch.float32, device=self.device),
            texts=texts, preds=preds, max_new_tokens=max_new, prefix_len=prefix_len,
            seconds_generation=t1 - t0, seconds_scoring=t2 - t1,
        )

    def optimise(self, roll: Rollout) -> dict[str, float | None]:
        """KL-shaped rewards, advantages (GAE, or leave-one-out within each prompt's rollouts), then
        ``ppo_epochs`` of clipped PPO on shuffled minibatches (value metrics None when no value loss is run)."""
        ppo, mask = self.ppo, roll.mask
        rewards = compute_rewards(roll.scores, roll.logprobs, roll.ref_logprobs, mask, self.kl_ctl.value)
        use_values = ppo.advantage == "gae"
        if use_values:
            advantages, returns = gae(rewards, roll.values, mask, ppo.gamma, ppo.lam)
        else:
            advantages, returns = group_advantages(rewards, mask, ppo.rollouts_per_prompt)
        if ppo.whiten_advantages:
            advantages = whiten(advantages, mask)
        B, R, T = mask.shape[0], mask.shape[1], ppo.temperature
        mb, ga = ppo.mini_batch_size, ppo.gradient_accumulation_steps
        n_mb = math.ceil(B / mb)
        stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "clipfrac", "value_clipfrac",
                                                          "approx_kl", "grad_norm")}
        # eval mode, as the rollout (and TRL 0.11's PPO): with LoRA dropout on here the first ratio would not be 1
        self.net.eval()
        for group in self.opt.param_groups:  # linear warmup over the first warmup_steps updates
            group["lr"] = self.learning_rate * group.get("lr_scale", 1.0)  # a checkpoint from before lr_scale: 1
        for _ in range(ppo.ppo_epochs):
            perm = torch.randperm(B, device=self.device)
            for k in range(n_mb):
                idx = perm[k * mb:(k + 1) * mb]
                group_start = (k // ga) * ga
                group_size = min(ga, n_mb - group_start)
                sync = k == group_start + group_size - 1
                with nullcontext() if sync else self.acc.no_sync(self.net):
                    logits, values = self.net(roll.input_ids[idx], roll.attention_mask[idx], R, roll.prefix_len)
                    logprobs = logprobs_from_logits(logits.float() / T, roll.response[idx])
                    m = mask[idx]
                    pl, clipfrac, approx_kl = policy_loss(logprobs, roll.logprobs[idx], advantages[idx], m,
                                                          ppo.cliprange)
                    if use_values:
                        vl, vclipfrac = value_loss(values, roll.values[idx], returns[idx], m, ppo.cliprange_value)
                        loss = pl + ppo.vf_coef * vl
                    else:  # the group is the baseline: the value head is left untrained
                        vl = vclipfrac = None
                        loss = pl
                    self._fail_if(not torch.isfinite(loss).item(), "loss")
                    self.acc.backward(loss / group_size)
                if sync:  # max_grad_norm null: no clipping (an infinite bound scales by 1), the norm is still logged
                    max_norm = math.inf if ppo.max_grad_norm is None else ppo.max_grad_norm
                    norm = self.acc.clip_grad_norm_(self.net.parameters(), max_norm)
                    self.opt.step()
                    self.opt.zero_grad(set_to_none=True)
                    stats["grad_norm"].append(float(norm))
                for key, val in (("policy_loss", pl), ("value_loss", vl), ("clipfrac", clipfrac),
                                 ("value_clipfrac", vclipfrac), ("approx_kl", approx_kl)):
                    if val is not None:
                        stats[key].append(float(val.detach()))
        out: dict[str, float | None] = {k: sum(v) / len(v) if v else None for k, v in stats.items()}
        out["explained_variance"] = explained_variance(roll.values, returns, mask) if use_values else None
        out["return_mean"] = float(masked_mean(returns, mask))
        return out

    def train_step(self) -> dict[str, Any]:
        """One PPO update on every process; returns its metrics, over the episodes of all processes.

        ``reward_mean``: mean rule score; ``accuracy``: right answers among classification episodes
        (None without any); ``invalid_rate``: unparseable answers; ``kl``: mean over episodes of the
        summed per-token ``logp - ref_logp``; ``kl_coef``: the coefficient used for this step's
        rewards (``kl_coef_next`` after the controller update); ``entropy``: mean per-token entropy of
        the sampling distribution; losses, clip fractions, ``approx_kl`` and ``grad_norm``: means over
        minibatches; ``tokens_per_second``: response tokens of all processes per second of the step;
        ``seconds_*``: generation (sampling, which also gives the policy's log-probs and values), scoring
        (rule reward and the reference forward),
        optimisation (GAE and the PPO epochs); ``pred_frac/<task>/<label word>`` and ``pred_frac/<task>/invalid``:
        shares of the task's episodes per answer (classification tasks; a warning when one answer takes
        over, see :func:`collapsed_answer`); with several tasks, ``task/<task>/reward_mean``,
        ``/accuracy`` and ``/invalid_rate`` per task (:meth:`_task_metrics`).
        """
        t0 = time.perf_counter()
        bs, k = self.ppo.batch_size, self.ppo.rollouts_per_prompt
        n_prompts = bs // k  # each drawn k times, one after the other: the groups of group_advantages
        idx = self.episode_indices(self.cursor + self.rank * n_prompts, n_prompts)
        records = [self.records[i] for i in idx for _ in range(k)]
        roll = self.rollout(records)
        scores = roll.scores
        self._fail_if(not torch.isfinite(scores).all().item(), "reward")
        kl_coef, learning_rate = self.kl_ctl.value, self.learning_rate
        t1 = time.perf_counter()
        opt_stats = self.optimise(roll)
        t2 = time.perf_counter()

        mask = roll.mask
        seq_kl = None if roll.ref_logprobs is None else ((roll.logprobs - roll.ref_logprobs) * mask).sum(1)
        classif = [(p, r["label"]) for p, r in zip(roll.preds, records) if not self.tasks[r["task"]].is_regression]
        sums = self._reduce_named({  # over the episodes of all processes
            "score": float(scores.sum()), "episodes": len(records),
            "right": sum(p is not None and int(p) == int(g) for p, g in classif), "classified": len(classif),
            "invalid": sum(p is None for p in roll.preds), "tokens": float(mask.sum()),
            "entropy": float((roll.entropy * mask).sum()),
            **({"kl": float(seq_kl.sum())} if seq_kl is not None else {}),  # every process skips it alike
        })
        n, n_tokens = sums["episodes"], sums["tokens"]
        means = self._reduce_named({  # averaged over the processes; a statistic not computed (None) on every one
            **{key: val for key, val in opt_stats.items() if val is not None},
            "seconds_generation": roll.seconds_generation, "seconds_scoring": roll.seconds_scoring,
            "seconds_optimisation": t2 - t1, "max_new_tokens": roll.max_new_tokens,
        }, "mean")
        kl = sums["kl"] / n if "kl" in sums else None  # None: not computed (no reference forward)
        if kl is not None:
            self.kl_ctl.update(kl, int(n))  # n_steps: episodes of this update, all processes
        step_seconds = time.perf_counter() - t0
        self.step += 1
        self.cursor += n_prompts * self.world
        shares = self._answer_shares(records, roll.preds)
        per_task = self._task_metrics(records, roll.preds, scores) if len(self.tasks) > 1 else {}
        metrics = {
            "step": self.step, "reward_mean": sums["score"] / n,
            "accuracy": sums["right"] / sums["classified"] if sums["classified"] else None,
            "invalid_rate": sums["invalid"] / n, "kl": kl, "kl_coef": kl_coef, "kl_coef_next": self.kl_ctl.value,
            "learning_rate": learning_rate,
            "entropy": sums["entropy"] / max(n_tokens, 1),
            **{k: means.get(k) for k in ("policy_loss", "value_loss", "clipfrac", "value_clipfrac", "approx_kl",
                                         "grad_norm", "explained_variance", "return_mean")},
            "response_length": n_tokens / n, "max_new_tokens": means["max_new_tokens"], "episodes": int(n),
            "tokens_per_second": n_tokens / step_seconds, "seconds_generation": means["seconds_generation"],
            "seconds_scoring": means["seconds_scoring"], "seconds_optimisation": means["seconds_optimisation"],
            "seconds_step": step_seconds, **per_task, **shares,
        }
        metrics = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        self.train_seconds += step_seconds
        self.last_metrics = metrics
        return metrics

    # -- the loop -----------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        steps, save_every = self.ppo.steps, self.ppo.save_every
        if self.main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        start_step, t_start = self.step, time.perf_counter()
        self._info("PPO: %d records, %d process(es) x %d rollouts per step, steps %d -> %d, device %s",
                   len(self.records), self.world, self.ppo.batch_size, start_step, steps, self.device)
        bar = tqdm(total=steps, initial=start_step, desc="ppo", unit="step", disable=not self.main, mininterval=1.0)
        while self.step < steps:
            metrics = self.train_step()
            if self.main:
                with open(self.output_dir / METRICS_FILE, "a", encoding="utf-8") as f:
                    f.write(json.dumps(metrics) + "\n")
                for cb in self.callbacks:
                    cb(metrics)
                bar.set_postfix(reward=f"{metrics['reward_mean']:.2f}",
                                **({"kl": f"{metrics['kl']:.3f}"} if metrics["kl"] is not None else {}))
            bar.update(1)
            if self.step % save_every == 0 or self.step == steps:
                self.save_checkpoint()
        bar.close()
        wall = time.perf_counter() - t_start
        ran = self.step - start_step
        summary = {
            "steps": self.step, "resumed_from_step": self.resumed_from, "steps_this_run": ran,
            "final_metrics": self.last_metrics, "wall_time_seconds": wall, "train_seconds_total": self.train_seconds,
            "seconds_per_step": wall / ran if ran else None,
            "episodes_per_second": ran * self.ppo.batch_size * self.world / wall if ran else None,
            "num_processes": self.world, "batch_size_per_process": self.ppo.batch_size, "seed": self.seed,
            "model": self.model_id, "device": str(self.device), "collapse": self.collapse,
        }
        self.save_final(summary)
        return summary

    # -- files --------------------------------------------------------------------------------

    # -- files (gluerl.ppo.checkpoint) --------------------------------------------------------
    def save_checkpoint(self) -> None:
        """``checkpoints/step-N/`` (:func:`.checkpoint.save_checkpoint`)."""
        checkpoint.save_checkpoint(self)

    def save_final(self, summary: dict[str, Any]) -> None:
        """The adapter, ``value_head.safetensors``, ``train_summary.json`` (:func:`.checkpoint.save_final`)."""
        checkpoint.save_final(self, summary)

    def dump_rank_state(self, out_dir: str | Path) -> Path:
        """Debugging: every process writes its trainable parameters to ``out_dir/rank{N}.safetensors``."""
        return checkpoint.dump_rank_state(self, out_dir)
