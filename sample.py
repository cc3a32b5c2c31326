"""
sample.py (goldRLHF): generate from any checkpoint (or GPT-2 weights), and best-of-N sampling.

    python sample.py                                         # the SFT model on held-out task prompts
    python sample.py --init_from=out/ppo --prompt="Notes on the hotel: room ++, bed -. Again: yes."
    python sample.py --init_from=gpt2 --prompt_file=prompts.txt --max_new_tokens=100
    python sample.py --best_of=16                            # best-of-N with the reward model

Best-of-N (Nakano et al. 2021; Stiennon et al. 2020) keeps the reward model's favourite of N samples: no
training, and KL = log N - (N - 1) / N to the sampling policy (an upper bound: Beirami et al. 2024), so it is
the baseline beside every RLHF method on a gold-vs-KL plot. Every power of two n <= N is reported from
prefixes of the same N samples; temperature 0 (N copies of the greedy response) is refused.
"""
import math
import os

import torch

import common
import data
import rewards
import task
from configurator import UserError, configure

init_from = "out/sft"  # a checkpoint (file or out_dir), a Hugging Face GPT-2 directory, or 'gpt2'...
prompt = ""  # one prompt; empty: the built-in task's held-out prompts (or --prompt_file)
prompt_file = ""  # a text file with one prompt per line
num_samples = 1  # responses per prompt (without best-of-N) [> 0]
max_prompts = 100  # at most this many held-out prompts [> 0]
max_new_tokens = 40  # response length limit in tokens [> 0]
temperature = 1.0  # sampling temperature (0: greedy) [>= 0]
top_k = 0  # keep the k most likely tokens (0: off) [>= 0]
top_p = 1.0  # nucleus sampling mass (1.0: off) [> 0, <= 1]
best_of = 0  # best-of-N: N responses per prompt, keep the reward model's favourite (0: off) [>= 0]
reward_path = "out/reward"  # the reward model for best-of-N
reward_ensemble = "mean"  # an ensemble reward model (reward.py --ensemble=K): 'mean', 'worst' (min over members), 'uncertainty'
uncertainty_coef = 1.0  # --reward_ensemble=uncertainty: the score is mean - uncertainty_coef * std over members [>= 0]
out_dir = "out/sample"  # best-of-N writes metrics.jsonl here
overwrite = False  # best-of-N: replace the metrics.jsonl an earlier run left in out_dir (a fresh run refuses to)
batch_size = 64  # prompts per generate() call [> 0]
device = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', ...
dtype = "auto"  # 'auto' (bfloat16 on cuda), 'float32', 'bfloat16'
seed = 1337  # random seed [>= 0]


def best_of_n_kl(n):
    """Analytic KL(best-of-n || base policy) = log n - (n - 1) / n, in nats."""
    return math.log(n) - (n - 1) / n


def best_of_n(scores, group, n):
    """Per prompt (`group` consecutive scores each), the index of the best of its first n samples."""
    return [max(range(j, j + n), key=lambda i: scores[i]) for j in range(0, len(scores), group)]


if __name__ == "__main__":
    config = configure(globals(), choices=dict(reward_ensemble=("mean", "worst", "uncertainty")))
    if best_of and temperature == 0:
        raise UserError("--best_of with --temperature=0: greedy decoding draws the same response N times (KL 0, "
                         "no choice to make); best-of-N needs sampling, e.g. --temperature=1")
    builtin = not prompt and not prompt_file
    if prompt:
        prompts, where = [prompt], ["--prompt"]
    elif prompt_file:  # (read before any model: a bad file is one line at once)
        lines = data.read_text(prompt_file, "prompt file").split("\n")
        numbered = [(n, line.rstrip("\r")) for n, line in enumerate(lines, 1) if line.strip()]
        if not numbered:
            raise UserError(f"{prompt_file}: no prompts in it (one prompt per line)")
        prompts, where = [p for _, p in numbered], [f"{prompt_file}:{n}" for n, _ in numbered]
    else:
        prompts, where = task.prompts("test")[:max_prompts], "the built-in task's test prompt"
    rt = common.setup(device, dtype, seed, out_dir if best_of else None, config, ("init_from", "reward_path", "prompt_file"),
                      ["metrics.jsonl"])
    model, vocab, _ = common.load_model(init_from)
    model.to(rt.device).eval()
    tok = data.Tokenizer(vocab)
    rm = rewards.load_reward_models(reward_path, vocab, rt.device, objective=reward_ensemble, coef=uncertainty_coef) \
        if best_of else None
    room = data.prompt_room(max_new_tokens, {"model": model.config.block_size,
                                             **({"reward model": rm.block_size} if best_of else {})})
    data.encode_prompts(tok, prompts, room, where)  # every prompt fits (and is in the vocabulary): before sampling

    if not best_of:
        with rt.ctx:
            texts, lengths, _ = data.sample_responses(
                model, tok, [p for p in prompts for _ in range(num_samples)], max_new_tokens, temperature,
                batch_size, top_k=top_k or None, top_p=top_p)
        rows = [p for p in prompts for _ in range(num_samples)]
        for p, r in zip(rows, texts):
            print(f"{p!r} -> {r!r}" + (f"  gold {task.gold(p, r):+.2f}" if builtin else ""))
        if builtin:
            print(" | ".join(f"{k} {v:.4g}" for k, v in task.report(rows, texts, lengths).items()))
        raise SystemExit(0)

    # ------------------------------------------------------------------ best-of-N
    rows = [p for p in prompts for _ in range(best_of)]  # N consecutive samples per prompt
    with rt.ctx, torch.no_grad():
        texts, lengths, _, sampled = data.sample_responses(model, tok, rows, max_new_tokens, temperature, batch_size,
                                                           with_ids=True)
        scores = rm.score(sampled, tok.eot, batch_size).tolist()  # the ids sampled
        ens = {k: v.tolist() for k, v in rm.ensemble_scores(sampled, tok.eot, batch_size).items()}  # an ensemble's mean, spread
    n_list = [2 ** k for k in range(int(math.log2(best_of)) + 1) if 2 ** k < best_of] + [best_of]
    for n in n_list:
        picked = best_of_n(scores, best_of, n)
        rep = {"n": n, "reward": sum(scores[i] for i in picked) / len(picked),
               "kl": best_of_n_kl(n), "response_len": sum(lengths[i] for i in picked) / len(picked),
               **{k: sum(v[i] for i in picked) / len(picked) for k, v in ens.items()}}
        if builtin:
            rep.update({k: v for k, v in task.report(prompts, [texts[i] for i in picked]).items()})
        common.log_metrics(os.path.join(out_dir, "metrics.jsonl"), rep)
    for j, p in enumerate(prompts[:3]):
        i = picked[j]
        print(f"  {p!r} -> {texts[i]!r}  reward {scores[i]:+.2f}" + (f"  gold {task.gold(p, texts[i]):+.2f}" if builtin else ""))
