"""
dpo.py (goldRLHF): Direct Preference Optimization (Rafailov et al. 2023) and its variants, one switch.

DPO fits the policy to preference pairs (prompt, chosen, rejected): beta * log(pi / pi_ref) is an implicit
reward, and the Bradley-Terry loss on it trains the policy with no reward model and no sampling. --loss_type:
    sigmoid  DPO, eq. 7; with --label_smoothing=eps, conservative DPO (cDPO, Mitchell 2023)
    robust   robust DPO (Chowdhury et al. 2024): unbiased under label-flip rate eps
    ipo      IPO (Azar et al. 2023, eq. 17): squared loss to a finite margin 1/(2 beta)
    hinge    SLiC-HF (Zhao et al. 2023): hinge on the reference-normalised margin (as TRL)
    simpo    SimPO (Meng et al. 2024, eq. 6): reference-free, length-normalised log-probs, margin gamma
    kto      KTO (Ethayarajh et al. 2024): unpaired thumbs up / down against a reference point z0
--rpo_alpha > 0 adds an NLL term on the chosen response (RPO, Pang et al. 2024). --online is online DPO
(Guo et al. 2024; TRL's OnlineDPOTrainer): every step samples two responses per prompt from the policy,
--labeler picks (simulated people, a reward model or the AI judge rlaif.py trains), a paired loss trains.

    python dpo.py                                   # built-in task: the pairs feedback.py writes
    python dpo.py --loss_type=kto --data_path=out/feedback/binary_train.jsonl   # thumbs up / down
    python dpo.py --online=True --max_iters=150     # online DPO
    torchrun --nproc_per_node=2 dpo.py              # DDP

Data: JSONL of {"prompt","chosen","rejected"} (TRL's fields); KTO also reads {"prompt","completion","label"}
and splits a pair into a desirable and an undesirable row. Writes out_dir/ckpt.pt (an LM) and metrics.jsonl.
Departures: reference log-probs are precomputed (TRL's precompute_ref_log_probs; every step if --online or
--ref_mode=online) by the policy's own call, dropout 0: every margin is 0 at step 0. IPO sums log-probs, as the
paper (TRL averages); KTO's reference log-probs are computed every step (its mismatched pairs change with the
batch); Guo et al. label by an LLM.
"""
import os
import random
import time

import torch
import torch.nn.functional as F

import common
import data
import feedback_data
import rewards
import task
from common import log_metrics
from configurator import MissingFile, UserError, configure
from labelers import judge_pairs, label_pair, load_judge
from model import disable_dropout, token_logprobs

# ----------------------------------------------------------------------------- config
out_dir = "out/dpo"  # checkpoint, metrics.jsonl go here
init_from = "sft"  # 'sft' (policy starts from sft_path) or 'resume' (from out_dir/ckpt.pt)
overwrite = False  # replace what an earlier run left in out_dir: its checkpoint, metrics.jsonl (a fresh run refuses to)
sft_path = "out/sft/ckpt.pt"  # SFT checkpoint: the frozen reference and the policy's starting point
data_path = "out/feedback/pairwise_train.jsonl"  # JSONL of {prompt, chosen, rejected} (feedback.py writes it)
val_path = ""  # held-out pairs for eval metrics; empty: pairwise_test.jsonl next to data_path if it exists
template = "plain"  # prompt template for JSONL prompts: 'plain' or 'instruction'
# the loss
loss_type = "sigmoid"  # 'sigmoid' (DPO), 'ipo', 'hinge', 'robust', 'simpo', 'kto'
beta = 0.5  # strength of the KL-to-reference constraint (sigmoid/ipo/hinge/robust); not TRL's 0.1: RESULTS.md 2.7 [> 0]
label_smoothing = 0.0  # assumed label-flip rate eps: sigmoid -> conservative DPO (cDPO), robust needs > 0 [>= 0, < 0.5]
simpo_beta = 2.0  # SimPO's reward scale (its rewards are per-token averages, so larger than beta) [> 0]
simpo_gamma = 1.0  # SimPO's target margin gamma (= simpo_beta * 0.5, the SimPO code's gamma_beta_ratio) [>= 0]
rpo_alpha = 0.0  # weight of the length-normalised NLL on chosen responses (RPO); 0: off [>= 0]
desirable_weight = 0.0  # KTO's lambda_D; 0: balanced, lambda_D n_D = lambda_U n_U (the paper: 1 to 4/3) [>= 0]
undesirable_weight = 1.0  # KTO's lambda_U [> 0]
max_items = 0  # train on the first this many rows of data_path (0: all); a row is one judgement [>= 0]
ref_mode = "precompute"  # 'precompute' (reference log-probs once, reference freed) or 'online'
# online DPO (Guo et al. 2024)
online = False  # True: each step, two responses per prompt from the policy, `labeler` picks, then the loss
labeler = "human"  # online: 'human' (simulated people vote on gold), 'reward' (reward_path scores) or 'ai' (judge_path)
reward_path = "out/reward/ckpt.pt"  # online --labeler=reward: the higher-scoring response is chosen
judge_path = "out/judge"  # online --labeler=ai: the AI judge (rlaif.py), both orders averaged
judge_principles = ""  # its principles file ('' = 'Prefer the better review.'), one drawn per pair
n_annotators = 3  # online --labeler=human: simulated people per pair, majority vote (feedback.py's default) [> 0]
label_temperature = 0.25  # their Bradley-Terry noise, gold units (feedback.py's default) [> 0]
# optimisation
batch_size = 32  # preference pairs per micro-batch per process (2x sequences in the forward) [> 0]
grad_accum = 1  # micro-batches per optimizer step [>= 1]
max_iters = 100  # optimizer steps [> 0]
lr = 1e-4  # peak learning rate (use ~5e-7 for GPT-2 weights) [> 0]
warmup_iters = 20  # linear warmup steps [>= 0]
weight_decay = 0.0  # AdamW weight decay on matrices [>= 0]
grad_clip = 1.0  # clip the global gradient norm (0: off) [>= 0]
# eval and logging
log_interval = 25  # print/log train metrics (means over the interval) every this many steps [> 0]
eval_interval = 50  # eval held-out pairs, gold score and KL every this many steps [> 0]
eval_repeats = 4  # built-in task: samples per held-out prompt for the gold score and KL [> 0]
max_new_tokens = 40  # response length limit when sampling [> 0]
temperature = 1.0  # sampling temperature for eval samples (0: greedy) [>= 0]
n_print = 3  # samples printed at each eval [>= 0]
# runtime
device = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...
dtype = "auto"  # 'auto' (bfloat16 on cuda), 'float32', 'bfloat16'
seed = 1337  # random seed (data order shared by all ranks; sampling offset by rank) [>= 0]
compile = False  # torch.compile the policy
fused_lm_head = False  # policy and reference log-probs straight from hidden states (kernels.linear_logprobs_entropy)

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust", "simpo", "kto")


# ----------------------------------------------------------------------------- the loss
def dpo_loss(logps_c, logps_r, ref_c, ref_r, len_c, len_r, loss_type="sigmoid", beta=0.1, label_smoothing=0.0,
             simpo_beta=2.0, simpo_gamma=1.0, rpo_alpha=0.0):
    """Per-pair preference loss, the papers' formulas in TRL's names. Inputs (B,) fp32: summed log-probs of
    chosen / rejected under the policy (logps_*) and the reference (ref_*; None for simpo), response lengths
    (len_*). Returns (losses, chosen_rewards, rejected_rewards), each (B,), the implicit rewards detached."""
    eps = label_smoothing
    if loss_type == "simpo":  # Meng et al. 2024 eq. 6: r = beta/|y| log pi(y|x), no reference
        rc, rr = simpo_beta * logps_c / len_c, simpo_beta * logps_r / len_r
        h = rc - rr - simpo_gamma
        losses = -F.logsigmoid(h) * (1 - eps) - F.logsigmoid(-h) * eps
    else:
        rc, rr = beta * (logps_c - ref_c), beta * (logps_r - ref_r)  # DPO's implicit rewards
        h = (logps_c - ref_c) - (logps_r - ref_r)  # log-ratio margin, "logits" in TRL
        if loss_type == "sigmoid":  # Rafailov et al. eq. 7; eps > 0: cDPO (Mitchell 2023)
            losses = -F.logsigmoid(beta * h) * (1 - eps) - F.logsigmoid(-beta * h) * eps
        elif loss_type == "robust":  # Chowdhury et al. 2024 eq. 8: unbiased estimate of the clean loss
            losses = (-F.logsigmoid(beta * h) * (1 - eps) + F.logsigmoid(-beta * h) * eps) / (1 - 2 * eps)
        elif loss_type == "ipo":  # Azar et al. 2023 eq. 17, tau = beta: regress h onto 1 / (2 beta)
            losses = (h - 1 / (2 * beta)) ** 2
        elif loss_type == "hinge":  # SLiC-HF (Zhao et al. 2023) on the reference-normalised margin
            losses = torch.relu(1 - beta * h)
        else:
            raise UserError(f"unknown loss_type {loss_type!r}: use one of {', '.join(LOSS_TYPES)}")
    if rpo_alpha:  # RPO (Pang et al. 2024): + alpha * NLL of the chosen response, per token
        losses = losses - rpo_alpha * logps_c / len_c
    return losses, rc.detach(), rr.detach()


def kto_reference_point(kl_logps, kl_ref, ddp=False):
    """KTO's z0 (Ethayarajh et al. 2024, eq. 7): KL(pi || pi_ref) estimated by the mean log-ratio of the
    mismatched pairs kl_logps, kl_ref (B,) (over all ranks if ddp), clamped at 0, detached. Returns a scalar."""
    z = (kl_logps - kl_ref).mean().detach()
    if ddp:
        torch.distributed.all_reduce(z)
        z = z / torch.distributed.get_world_size()
    return z.clamp(min=0)


def kto_mismatched(rows, T):
    """KTO's mismatched pairs (x_i, y_{i-1}) for z0 (Ethayarajh et al. 2024, sec. 4.1; TRL and HALOs build them
    within the batch): the batch's responses, desirable and undesirable, rolled by one. rows {ids, n_prompt}
    -> one id list per row, cut to T tokens."""
    return [(r["ids"][:r["n_prompt"]] + q["ids"][q["n_prompt"]:])[:T] for r, q in zip(rows, rows[-1:] + rows[:-1])]


def pair_mean(losses, n_global, world_size=1):
    """The mean over all ranks' pairs once DDP has averaged the gradients: sum(losses) x world / n_global.
    losses (n_local,): online DPO keeps a different number of pairs on each rank, so a rank's own mean is not it."""
    return losses.sum() * world_size / max(n_global, 1)


def kto_loss(logps, ref, z0, desirable, beta=0.1, w_d=1.0, w_u=1.0):
    """KTO's loss (Ethayarajh et al. 2024, eq. 8): lambda_y - v, v = lambda_D sigmoid(beta (r - z0)) if desirable
    else lambda_U sigmoid(beta (z0 - r)), r = log pi - log pi_ref. logps, ref, desirable (B,); z0 a scalar.
    Returns (losses (B,), the implicit rewards beta * r (B,), detached)."""
    r = logps - ref
    lam = torch.where(desirable, torch.full_like(r, w_d), torch.full_like(r, w_u))
    v = torch.where(desirable, w_d * torch.sigmoid(beta * (r - z0)), w_u * torch.sigmoid(beta * (z0 - r)))
    return lam - v, beta * r.detach()


def online_pairs(seqs, n_prompt, votes):
    """Online DPO's pairs (Guo et al. 2024, Algorithm 1): seqs, 2B token-id lists, hold prompt i's two samples
    in rows 2i, 2i + 1; votes (B,) the first one's share of votes. Returns rows {chosen, rejected, n_prompt};
    identical samples and split votes (exactly 1/2) say nothing about which is better: dropped."""
    rows = []
    for a, b, n_p, v in zip(seqs[::2], seqs[1::2], n_prompt, votes):
        if a != b and v != 0.5:
            rows.append(dict(chosen=a, rejected=b, n_prompt=n_p) if v > 0.5 else dict(chosen=b, rejected=a, n_prompt=n_p))
    return rows


def human_votes(prompts, texts_a, texts_b, rng, n_annotators=3, temperature=0.25):
    """(B,) share of n_annotators simulated people voting for a (labelers.label_pair: Bradley-Terry on gold)."""
    return [sum(label_pair(task.gold(p, a), task.gold(p, b), rng, temperature) for _ in range(n_annotators)) / n_annotators
            for p, a, b in zip(prompts, texts_a, texts_b)]


def sequence_logps(model, x, y, fused=False):
    """Summed response log-probs (N,) fp32 and response lengths (N,) of x, y (N, L) (y -100 off the response),
    one call for policy and reference alike. fused: no (N, L, V) logits (kernels.linear_logprobs_entropy)."""
    logp, _ = token_logprobs(model, x, y, fused=fused, entropy=False)  # (N, L), 0 where y is -100
    return logp.sum(-1), (y != -100).sum(-1)


if __name__ == "__main__":
    config = configure(globals(), choices=dict(loss_type=LOSS_TYPES, ref_mode=("precompute", "online"),
                                               init_from=("sft", "resume"), template=("plain", "instruction"),
                                               labeler=("human", "reward", "ai")))
    if online and loss_type == "kto":
        raise UserError("--online labels pairs, and KTO trains on unpaired thumbs", fix="use a paired --loss_type "
                        "(sigmoid, ipo, hinge, robust, simpo)")
    if online and temperature == 0:
        raise UserError("--temperature=0 with --online: greedy decoding gives one response per prompt, online "
                        "DPO compares two", fix="use --temperature > 0")
    rt = common.setup(device, dtype, seed, out_dir, config, ("sft_path", "data_path", "val_path",  # + online's labeler
                      online and labeler == "reward" and "reward_path", online and labeler == "ai" and "judge_path"))
    random.seed(seed + rt.rank)  # online --labeler=human: the simulated people's noise (saved with the checkpoint)

    # ----------------------------------------------------------------------------- models
    model, vocab, ckpt = common.load_model(out_dir if init_from == "resume" else sft_path)
    ckpt = ckpt if init_from == "resume" else None
    model.to(rt.device)
    if disable_dropout(model) and rt.master:
        print("note: dropout set to 0 (policy and reference must be the same function at step 0)")
    tok = data.Tokenizer(vocab)
    T = model.config.block_size
    builtin = vocab is not None and list(vocab) == task.vocab(tok)  # the built-in task's model: gold and KL evals
    need_ref = loss_type != "simpo"  # SimPO is reference-free (the eval's KL still reads the reference)
    ref_model = common.load_frozen(sft_path, vocab, "reference", rt.device)[0] if need_ref or builtin else None
    if online and labeler == "human" and not builtin:
        raise UserError("--labeler=human simulates people with the built-in task's gold scorer; this model is not "
                        "the built-in task's", fix="label with a reward model: --labeler=reward --reward_path=...")
    # online: fresh samples every step; KTO: mismatched pairs built per batch. Nothing to precompute
    precompute = ref_mode == "precompute" and not online and loss_type != "kto"
    if online:
        rm = rewards.load_reward_models(reward_path, vocab, rt.device) if labeler == "reward" else None
        if labeler == "ai":  # RLAIF (Guo et al. 2024's own setting: an AI labeler)
            judge, jtok, a_id, b_id, principles = load_judge(judge_path, judge_principles, rt.device)

    # ----------------------------------------------------------------------------- data
    kto = loss_type == "kto"
    A, B_ = ("ids", "kl_ids") if kto else ("chosen", "rejected")  # the two sequences of a row, in one batch

    def load_rows(path):
        """Rows of path, token ids: {chosen, rejected, n_prompt}; KTO: {ids, n_prompt, desirable, kl_ids (the
        mismatched pair for z0, set per batch)}. Skips ties and identical pairs; cuts long rows."""
        if not os.path.exists(path):
            raise MissingFile("no preference data", path, "run `python feedback.py` first (it writes the built-in "
                              "task's simulated preferences there) or pass --data_path=your.jsonl (README: "
                              "Dataset formats)")
        unpaired = "label" in data.read_jsonl(path)[0]
        if unpaired and not kto:
            raise UserError("unpaired rows (thumbs up / down): only KTO trains on them", path, "pass --loss_type=kto")
        rows = feedback_data.load_unpaired(path) if unpaired else feedback_data.load_preferences(path, template)
        out, same, cut, ties = [], 0, 0, 0
        for r in rows[:max_items or None]:
            texts = [r["completion"]] if unpaired else [r["chosen"], r["rejected"]]
            ties += r.get("tie", False)  # a tie has no chosen: DPO (and KTO's pairs) skip it
            if texts[0] == texts[-1] and not unpaired or r.get("tie"):
                same += 1
                continue
            p = tok.encode(r["prompt"], r["where"])
            if not p or len(p) >= T:
                raise UserError(f"prompt has {len(p)} tokens; it needs 1..{T - 1} (the model's context is {T})",
                                r["where"], "shorten it")
            ids = [tok.encode(t, r["where"]) for t in texts]  # (a token the vocabulary lacks: one line naming it)
            cut += sum(len(p) + len(c) > T for c in ids)
            ids = [(p + c)[:T] for c in ids]
            if not kto:
                out.append(dict(chosen=ids[0], rejected=ids[1], n_prompt=len(p), where=r["where"]))
            else:
                labels = [r["label"]] if unpaired else [True, False]
                out += [dict(ids=i, n_prompt=len(p), desirable=y) for i, y in zip(ids, labels)]
        if rt.master and (same or cut):
            print(f"{path}: skipped {ties} ties, {same - ties} pairs with identical chosen and rejected; cut {cut} "
                  f"responses longer than the context ({T} tokens)")
        if not out:
            raise UserError(f"no usable rows ({ties} were ties: DPO has no tie outcome; {same - ties} pairs had "
                            f"identical chosen and rejected)", path)
        return out

    train = [] if online and builtin else load_rows(data_path)
    first = {}  # online: only the prompts are used (each with its first row's file:line)
    for r in train if online else []:
        first.setdefault(tok.decode(r["chosen"][:r["n_prompt"]]), r["where"])
    train_prompts = (task.prompts("train") if builtin else list(first)) if online else []
    train = [] if online else train
    beside = os.path.join(os.path.dirname(data_path), os.path.basename(data_path).replace("_train.jsonl", "_test.jsonl"))
    val_file = val_path or (beside if data_path.endswith("_train.jsonl") else "")  # feedback.py's held-out rows
    val = load_rows(val_file) if val_file and (val_path or os.path.exists(val_file)) and rt.master else []  # (yours: must exist)
    eval_prompts = [p for p in task.prompts("test") for _ in range(eval_repeats)] if builtin else []
    if online or builtin:  # sampled (online pairs, the eval): prompt + response must fit every model they pass
        room = data.prompt_room(max_new_tokens, {"policy": T, **({"reward model": rm.block_size}
                                                                 if online and labeler == "reward" else {})})
        data.encode_prompts(tok, train_prompts, room, list(first.values()) or "the built-in task's prompt")
        data.encode_prompts(tok, eval_prompts[::eval_repeats], room, "the built-in task's test prompt")
    w_d = desirable_weight
    if kto:
        n_d = sum(r["desirable"] for r in train)
        if n_d in (0, len(train)):
            raise UserError(f"KTO needs thumbs up and thumbs down, but all {len(train)} rows are "
                            f"{'up' if n_d else 'down'}", data_path, "add rows of the other label (or use pairs)")
        w_d = desirable_weight or undesirable_weight * (len(train) - n_d) / n_d  # lambda_D n_D = lambda_U n_U
        if rt.master:
            print(f"KTO: {n_d} desirable, {len(train) - n_d} undesirable; lambda_D {w_d:.3f}, lambda_U "
                  f"{undesirable_weight:g}: lambda_D n_D / (lambda_U n_U) = "
                  f"{w_d * n_d / (undesirable_weight * (len(train) - n_d)):.3f} (the paper: 1 to 4/3)")
    if rt.master and online:
        print(f"online: {len(train_prompts)} prompts, two samples each per pair, labelled by "
              f"{dict(human=f'{n_annotators} simulated people', reward=reward_path, ai=f'the judge {judge_path}')[labeler]}; {len(val)} held-out rows, "
              f"loss {loss_type}")
    elif rt.master:
        print(f"{len(train)} training rows, {len(val)} held-out rows, loss {loss_type}")

    def with_mismatched(rows):
        """KTO: rows with their mismatched pairs, rolled over these rows (the whole batch of every rank)."""
        return [dict(r, kl_ids=ids) for r, ids in zip(rows, kto_mismatched(rows, T))] if kto else rows

    def collate(rows):
        """One right-padded batch (2B, L-1): chosen (KTO: the response) in rows 0..B-1, rejected (KTO: the
        mismatched pair) in B..2B-1, so one forward scores both."""
        x, y = data.collate_completions([(r[A], r["n_prompt"]) for r in rows] +
                                        [(r[B_], r["n_prompt"]) for r in rows], tok.eot)
        return x.to(rt.device), y.to(rt.device)

    if need_ref and precompute:  # the reference's sequence log-probs of every row, once
        t0 = time.time()
        with torch.no_grad():
            for part in (train, val):
                for i in range(0, len(part), 64):
                    rows = part[i:i + 64]
                    with rt.ctx:
                        logps, _ = sequence_logps(ref_model, *collate(rows), fused_lm_head)
                    for r, c, rj in zip(rows, logps[:len(rows)].tolist(), logps[len(rows):].tolist()):
                        r["ref_a"], r["ref_b"] = c, rj
        if ref_model is not None and rt.device_type == "cuda":
            ref_model.to("cpu")  # off the GPU while training; the eval brings it back for the KL
        if rt.master:
            print(f"reference log-probs precomputed in {time.time() - t0:.1f}s")

    def batch_loss(m, rows):
        """Per-row losses (B,) and logged numbers for a list of rows: one concatenated forward of both sequences."""
        B = len(rows)
        x, y = collate(rows)
        with rt.ctx:
            logps, lens = sequence_logps(m, x, y, fused_lm_head)
        ref_c = ref_r = None
        if need_ref and not precompute:
            with torch.no_grad(), rt.ctx:
                ref_logps, _ = sequence_logps(ref_model, x, y, fused_lm_head)
            ref_c, ref_r = ref_logps[:B], ref_logps[B:]
        elif need_ref:
            ref_c = torch.tensor([r["ref_a"] for r in rows], device=logps.device)
            ref_r = torch.tensor([r["ref_b"] for r in rows], device=logps.device)
        if kto:  # z0 over the whole batch: all ranks' mismatched pairs (training under DDP)
            z0 = kto_reference_point(logps[B:], ref_r, rt.ddp and m is not raw_model)
            up = torch.tensor([r["desirable"] for r in rows], device=logps.device)
            losses, rew = kto_loss(logps[:B], ref_c, z0, up, beta, w_d, undesirable_weight)
            mean = lambda v, w: (v * w).sum() / w.sum().clamp(min=1)  # over the desirable / undesirable rows
            d, u, lp = up.float(), (~up).float(), logps[:B].detach()
            stats = torch.stack([losses.mean().detach(), mean(rew, d), mean(rew, u), mean(rew, d) - mean(rew, u),
                                 ((rew > beta * z0) == up).float().mean(), mean(lp, d), mean(lp, u), z0])
            return losses, stats
        losses, rc, rr = dpo_loss(logps[:B], logps[B:], ref_c, ref_r, lens[:B], lens[B:], loss_type, beta,
                                  label_smoothing, simpo_beta, simpo_gamma, rpo_alpha)
        stats = torch.stack([losses.mean().detach(), rc.mean(), rr.mean(), (rc - rr).mean(), (rc > rr).float().mean(),
                             logps[:B].mean().detach(), logps[B:].mean().detach()])
        return losses, stats

    # (KTO: chosen / rejected are the desirable / undesirable rows, accuracies the share on the side of z0
    # their label asks for, and z0 its reference point)
    STATS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
             "logps/chosen", "logps/rejected") + (("z0",) if kto else ())

    # ----------------------------------------------------------------------------- optimizer
    optimizer = common.configure_optimizer(model, lr, weight_decay)
    rng, iter_num = common.resume(ckpt, rt, seed, optimizer)  # the data order: the same on every rank
    raw_model, model = model, common.wrap(model, rt, compile)

    def online_batch():
        """This rank's batch_size prompts, 2 policy samples each, labelled -> (rows, n labelled, gold, mismatch_kl)."""
        prompts = [train_prompts[rng.randrange(len(train_prompts))] for _ in range(batch_size * rt.world_size)]
        prompts = prompts[rt.rank::rt.world_size]
        twice = [p for p in prompts for _ in range(2)]
        with torch.no_grad(), rt.ctx:
            gens = []
            texts, lengths, _, seqs = data.sample_responses(raw_model, tok, twice, max_new_tokens, temperature,
                                                            with_ids=True, keep=gens)
            mismatch = common.sampler_mismatch(raw_model, gens, temperature, fused_lm_head)
            if labeler == "human":
                votes = human_votes(prompts, texts[::2], texts[1::2], random, n_annotators, label_temperature)
            elif labeler == "ai":  # the judge, both orders; a tie or an unreadable pair says nothing
                lo = judge_pairs(judge, jtok, [(random.choice(principles), p, a, b) for p, a, b in
                                               zip(prompts, texts[::2], texts[1::2])], a_id, b_id)[0]
                votes = [0.5 if x is None or x == 0 else float(x > 0) for x in lo]
            else:  # the reward model as the labeler: the higher score wins, a tie says nothing
                s = rm.score(seqs, tok.eot).tolist()
                votes = [0.5 if a == b else float(a > b) for a, b in zip(s[::2], s[1::2])]
        rows = online_pairs(seqs, [len(q) - n for q, n in zip(seqs[::2], lengths[::2])], votes)
        n = torch.tensor(float(len(rows)), device=rt.device)
        if rt.ddp:
            torch.distributed.all_reduce(n)
        gold = sum(task.gold(p, t) for p, t in zip(twice, texts)) / len(texts) if builtin else float("nan")
        # a micro-batch with no usable pair (every pair tied): one tie, whose gradient is exactly 0 (chosen is
        # rejected), keeps every DDP rank's forward and backward in step
        rows = rows or [dict(chosen=seqs[0], rejected=seqs[0], n_prompt=len(seqs[0]) - lengths[0])]
        return rows, int(n.item()), gold, mismatch

    @torch.no_grad()
    def evaluate():
        """Held-out pair metrics; on the built-in task, gold and sequence KL to the reference of fresh samples."""
        raw_model.eval()  # rank 0 only: the raw model, since DDP's forward would wait for the other ranks
        out = {"labels": n_labels}  # preference labels trained on so far (offline: the rows of data_path)
        if val:
            stats = torch.stack([batch_loss(raw_model, with_mismatched(val[i:i + batch_size]))[1] * len(val[i:i + batch_size])
                                 for i in range(0, len(val), batch_size)]).sum(0) / len(val)
            out.update({"val_" + k: v for k, v in zip(STATS, stats.tolist())})
        if eval_prompts:
            with rt.ctx:
                texts, lengths, kls = data.sample_responses(raw_model, tok, eval_prompts, max_new_tokens,
                                                            temperature, ref=ref_model.to(rt.device))
            out.update(task.report(eval_prompts, texts, lengths, kls))
            for p, r in list(zip(eval_prompts, texts))[::eval_repeats][:n_print]:
                print(f"  {p!r} -> {r!r}  gold {task.gold(p, r):+.2f}")
            if need_ref and precompute and rt.device_type == "cuda":
                ref_model.to("cpu")
        raw_model.train()
        return out

    # ----------------------------------------------------------------------------- training loop
    start_iter = iter_num if ckpt else None
    n_labels = (ckpt or {}).get("labels", 0) if online else len(train)
    t0, sums, n_sums, gold_sum, mismatch_sum = time.time(), 0, 0, 0.0, 0.0
    model.train()
    while True:
        if common.eval_due(iter_num, eval_interval, max_iters, start_iter):
            common.evaluate_and_save(evaluate, out_dir, rt, iter_num, config, vocab, rng, raw_model, optimizer,
                                     labels=n_labels)
            t0 = time.time()
        if iter_num >= max_iters:
            break
        common.set_lr(optimizer, common.cosine_lr(iter_num, lr, warmup_iters, max_iters))
        for micro in range(grad_accum):
            # DDP: all ranks draw the same batch_size x world pairs, each keeps every world-th; the loss is the
            # mean over all ranks' pairs, so N processes train exactly like one process at N x batch_size
            if online:
                rows, n_pairs, gold, mismatch = online_batch()
                n_labels, gold_sum, mismatch_sum = n_labels + n_pairs, gold_sum + gold, mismatch_sum + mismatch
            else:
                rows = with_mismatched([train[rng.randrange(len(train))] for _ in range(batch_size * rt.world_size)])
                rows, n_pairs = rows[rt.rank::rt.world_size], len(rows)
            if rt.ddp:  # all-reduce gradients on the last micro-batch only
                model.require_backward_grad_sync = micro == grad_accum - 1
            losses, stats = batch_loss(model, rows)
            loss = pair_mean(losses, n_pairs, rt.world_size)
            if not torch.isfinite(loss):
                raise RuntimeError(f"iter {iter_num}: loss is {loss.item()}; lower --lr (or raise --beta for "
                                   f"ipo) or check the data")
            (loss / grad_accum).backward()
            sums, n_sums = sums + stats, n_sums + 1
        common.optimizer_step(optimizer, model, grad_clip)
        iter_num += 1
        if iter_num % log_interval == 0 and rt.master:  # rank 0's own pairs: means over the interval
            dt = (time.time() - t0) / log_interval
            extra = dict(labels=n_labels, gold=gold_sum / n_sums,  # (gold of the samples labelled)
                         mismatch_kl=mismatch_sum / n_sums) if online else {}
            log_metrics(rt.metrics_path, {"iter": iter_num, **dict(zip(STATS, (sums / n_sums).tolist())), **extra,
                                          "lr": optimizer.param_groups[0]["lr"], "ms_per_iter": 1000 * dt})
            t0, sums, n_sums, gold_sum, mismatch_sum = time.time(), 0, 0, 0.0, 0.0
    common.finish(rt)
