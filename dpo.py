"""
dpo.py (goldRLHF): Direct Preference Optimization and its common variants, one switch (--loss_type).

DPO (Rafailov et al. 2023) fits the policy straight to preference pairs (prompt, chosen, rejected):
the RLHF objective's optimal policy makes beta * log(pi / pi_ref) an implicit reward, so the
Bradley-Terry loss on that reward trains the policy with no reward model and no sampling loop.
Variants, all in `dpo_loss` below:

    sigmoid   DPO, Rafailov et al. 2023 eq. 7; with --label_smoothing=eps it is conservative DPO
              (cDPO, Mitchell 2023, "A note on DPO with noisy preferences & relationship to IPO")
    robust    robust DPO, Chowdhury et al. 2024 ("Provably Robust DPO"), unbiased under label noise eps
    ipo       IPO, Azar et al. 2023 eq. 17: squared loss to a finite margin 1/(2 beta), does not
              push the margin to infinity
    hinge     SLiC-HF, Zhao et al. 2023: hinge on the reference-normalised margin (as TRL)
    simpo     SimPO, Meng et al. 2024 eq. 6: reference-free, length-normalised log-probs, margin gamma
    kto       KTO, Ethayarajh et al. 2024 ("KTO: Model Alignment as Prospect Theoretic Optimization"):
              unpaired thumbs up / down, each response's log-ratio against a reference point z0, the
              policy's KL to the reference estimated on mismatched prompt / response pairs (kto_loss)
    --rpo_alpha > 0 adds an NLL term on the chosen response (RPO, Pang et al. 2024, "Iterative Reasoning
              Preference Optimization"), against the "chosen log-probs fall too" failure of DPO.
    --online  online DPO (Guo et al. 2024, "Direct language model alignment from online AI feedback"; TRL's
              OnlineDPOTrainer): every step samples two responses per prompt from the current policy, a
              labeler picks (--labeler=human: the built-in task's simulated people, as feedback.py;
              --labeler=reward: a reward model, the higher score wins; --labeler=ai: the AI judge of
              rlaif.py under --judge_principles, both orders averaged), and any paired loss above trains
              on those fresh pairs, so the data follow the policy instead of staying on the SFT model's
              samples. `labels` (pairs labelled so far) is logged and kept in the checkpoint.

    python dpo.py                                   # built-in task: preference data from feedback.py
    python dpo.py --loss_type=ipo --beta=0.5
    python dpo.py --loss_type=kto --data_path=out/feedback/binary_train.jsonl   # thumbs up / down
    python dpo.py --data_path=my.jsonl --sft_path=out/sft/ckpt.pt
    python dpo.py --online=True --max_iters=150     # online DPO: 150 x 32 fresh pairs labelled by simulated people
    torchrun --nproc_per_node=2 dpo.py              # DDP

Data: JSONL of {"prompt","chosen","rejected"} (TRL's fields; chosen/rejected are the response texts,
ending in <|endoftext|> where the response ended). Default: the built-in task's simulated preferences
that `python feedback.py` writes (SFT samples labelled by noisy simulated humans from the gold scorer).
KTO reads unpaired rows {"prompt","completion","label"} (feedback.py's binary_*.jsonl), or pairs, each
split into a desirable chosen and an undesirable rejected response (the paper's setup on paired data).
Policy and frozen reference both start from the SFT checkpoint. Writes out_dir/ckpt.pt (an LM: sample.py
and later stages load it) and out_dir/metrics.jsonl.

Departures: reference log-probs are computed once before training by default (TRL's
precompute_ref_log_probs), so training runs no reference forward and, on a GPU, holds no second model
(the reference waits on the CPU for the eval's KL); --ref_mode=online keeps it on the device.
Policy and reference log-probs come from the same call (sequence_logps: same fused / unfused lm_head,
same dtype), so at step 0 every implicit reward and margin is 0, under bf16 and --fused_lm_head too
(bit for bit online; precomputed, the reference saw other batch shapes, which bf16 can round another way:
1e-05 on the mean); dropout is forced to 0 (TRL's disable_dropout) for the same reason.
IPO uses summed (sequence) log-probs as in the paper (TRL averages them per token). KTO's mismatched
pairs are fixed per item (item i's prompt with the next item's response of another prompt), so their
reference log-probs are precomputed too; TRL rolls the completions within each batch instead.
Online: the reference runs every step (fresh samples: nothing to precompute); pairs of identical samples
or split votes are dropped, so a step trains on up to batch_size pairs (the labels count says how many);
Guo et al. ask an LLM judge; here the simulated people or a reward model label (no AI judge is built yet).
On the built-in task the model is tiny and the lr is far higher than the ~5e-7 used for billion-parameter
models.
"""
import os
import random
import time

import torch
import torch.nn.functional as F

import common
import data
import rlaif
import task
from common import log_metrics
from configurator import MissingFile, UserError, configure
from feedback import label_pair
from model import disable_dropout, score_sequences, token_logprobs

# ----------------------------------------------------------------------------- config
out_dir = "out/dpo"  # checkpoint, metrics.jsonl go here
init_from = "sft"  # 'sft' (policy starts from sft_path) or 'resume' (from out_dir/ckpt.pt)
sft_path = "out/sft/ckpt.pt"  # SFT checkpoint: the frozen reference and the policy's starting point
data_path = "out/feedback/pairwise_train.jsonl"  # JSONL of {prompt, chosen, rejected} (feedback.py writes it)
val_path = ""  # held-out pairs for eval metrics; empty: pairwise_test.jsonl next to data_path if it exists
template = "plain"  # prompt template for JSONL prompts: 'plain' or 'instruction'
# the loss
loss_type = "sigmoid"  # 'sigmoid' (DPO), 'ipo', 'hinge', 'robust', 'simpo', 'kto'
beta = 0.5  # strength of the KL-to-reference constraint (sigmoid/ipo/hinge/robust); 0.1 drifts off-grammar here
label_smoothing = 0.0  # assumed label-flip rate eps: sigmoid -> conservative DPO (cDPO), robust needs > 0
simpo_beta = 2.0  # SimPO's reward scale (its rewards are per-token averages, so larger than beta)
simpo_gamma = 1.0  # SimPO's target margin gamma (= simpo_beta * 0.5, the SimPO code's gamma_beta_ratio)
rpo_alpha = 0.0  # weight of the length-normalised NLL on chosen responses (RPO); 0: off
desirable_weight = 0.0  # KTO's lambda_D; 0 = n_undesirable / n_desirable, so lambda_D n_D = lambda_U n_U (the paper: 1 to 4/3)
undesirable_weight = 1.0  # KTO's lambda_U
max_items = 0  # train on the first this many rows of data_path (0: all): one row is one judgement (a pair, or a thumbs)
ref_mode = "precompute"  # 'precompute' (reference log-probs once, reference freed) or 'online'
# online DPO (Guo et al. 2024): every step's pairs are sampled from the current policy and labelled then
online = False  # True: each step, two responses per prompt from the policy, `labeler` picks, then the loss
labeler = "human"  # online: 'human' (the built-in task's simulated people vote on gold), 'reward' (reward_path picks) or 'ai' (the judge)
reward_path = "out/reward/ckpt.pt"  # online --labeler=reward: the higher-scoring response is chosen
judge_path = "out/judge"  # online --labeler=ai: the AI judge (rlaif.py), both orders averaged
judge_principles = ""  # its principles file ('' = 'Prefer the better review.'), one drawn per pair
n_annotators = 3  # online --labeler=human: simulated people per pair, majority vote (feedback.py's default)
label_temperature = 0.25  # their Bradley-Terry noise, gold units (feedback.py's default)
# optimisation
batch_size = 32  # preference pairs per micro-batch per process (2x sequences in the forward)
grad_accum = 1  # micro-batches per optimizer step
max_iters = 200  # optimizer steps
lr = 1e-4  # peak learning rate (use ~5e-7 for GPT-2 weights)
warmup_iters = 20  # linear warmup steps
weight_decay = 0.0  # AdamW weight decay on matrices
grad_clip = 1.0  # clip the global gradient norm (0: off)
# eval and logging
log_interval = 25  # print/log train metrics (means over the interval) every this many steps
eval_interval = 100  # eval held-out pairs, gold score and KL every this many steps
eval_repeats = 4  # built-in task: samples per held-out prompt for the gold score and KL
max_new_tokens = 40  # response length limit when sampling
temperature = 1.0  # sampling temperature for eval samples (0: greedy)
n_print = 3  # samples printed at each eval
# runtime
device = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...
dtype = "auto"  # 'auto' (bfloat16 on cuda), 'float32', 'bfloat16'
seed = 1337  # random seed (data order shared by all ranks; sampling offset by rank)
compile = False  # torch.compile the policy
fused_lm_head = False  # policy and reference log-probs straight from hidden states (kernels.linear_logprobs_entropy)

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust", "simpo", "kto")


# ----------------------------------------------------------------------------- the loss
def dpo_loss(logps_c, logps_r, ref_c, ref_r, len_c, len_r, loss_type="sigmoid", beta=0.1, label_smoothing=0.0,
             simpo_beta=2.0, simpo_gamma=1.0, rpo_alpha=0.0):
    """Per-pair preference loss. All inputs (B,) fp32: summed log-probs of the chosen / rejected response
    under the policy (logps_*) and the reference (ref_*; unused by simpo, may be None), and the number of
    response tokens (len_*). Returns (losses (B,), chosen_rewards (B,), rejected_rewards (B,)); the
    rewards are the implicit ones, detached, for logging (rewards/accuracies = chosen > rejected).
    Formulas follow the papers, with the same names and conventions as TRL's DPOTrainer / CPOTrainer."""
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
    """KTO's z0 (Ethayarajh et al. 2024, eq. 7): an estimate of KL(pi || pi_ref), the mean log-ratio of
    mismatched pairs (prompt x_i with another item's response y_j, which neither model was trained to
    prefer), clamped at 0 and detached: no gradient flows through the reference point. kl_logps, kl_ref:
    (B,) summed log-probs under policy and reference -> scalar. ddp: the mean over every rank's pairs."""
    z = (kl_logps - kl_ref).mean().detach()
    if ddp:
        torch.distributed.all_reduce(z)
        z = z / torch.distributed.get_world_size()
    return z.clamp(min=0)


def kto_loss(logps, ref, z0, desirable, beta=0.1, w_d=1.0, w_u=1.0):
    """KTO's loss (Ethayarajh et al. 2024, eq. 8): r = log pi(y|x) - log pi_ref(y|x) against the reference
    point z0; value v = lambda_D sigmoid(beta (r - z0)) for a desirable response, lambda_U sigmoid(beta
    (z0 - r)) for an undesirable one; loss lambda_y - v. logps, ref: (B,) summed log-probs under policy and
    reference; z0: scalar (kto_reference_point); desirable: (B,) bool. Returns (losses (B,), implicit
    rewards beta * r (B,), detached)."""
    r = logps - ref
    lam = torch.where(desirable, torch.full_like(r, w_d), torch.full_like(r, w_u))
    v = torch.where(desirable, w_d * torch.sigmoid(beta * (r - z0)), w_u * torch.sigmoid(beta * (z0 - r)))
    return lam - v, beta * r.detach()


def online_pairs(seqs, n_prompt, votes):
    """Online DPO's training pairs (Guo et al. 2024, Algorithm 1): seqs are 2B token-id lists, prompt +
    response, the two responses to prompt i in rows 2i and 2i + 1; n_prompt (B,) the prompts' lengths;
    votes (B,) the labeler's share of votes for the first response, in [0, 1]. Returns the rows the loss
    reads, {chosen, rejected, n_prompt}: the first response chosen when its share is above 1/2. A pair
    of identical responses or a split vote (exactly 1/2) says nothing about which is better: dropped."""
    rows = []
    for a, b, n_p, v in zip(seqs[::2], seqs[1::2], n_prompt, votes):
        if a != b and v != 0.5:
            rows.append(dict(chosen=a, rejected=b, n_prompt=n_p) if v > 0.5 else dict(chosen=b, rejected=a, n_prompt=n_p))
    return rows


def human_votes(prompts, texts_a, texts_b, rng, n_annotators=3, temperature=0.25):
    """The built-in task's simulated people on fresh pairs, as feedback.py labels its files: each of
    n_annotators votes with Bradley-Terry noise on the hidden gold scores (feedback.label_pair). Returns
    (B,) the share of votes for response a."""
    return [sum(label_pair(task.gold(p, a), task.gold(p, b), rng, temperature) for _ in range(n_annotators)) / n_annotators
            for p, a, b in zip(prompts, texts_a, texts_b)]


def sequence_logps(model, x, y, fused=False):
    """Summed log-probs of the response tokens: the one call for policy and reference alike. x, y (N, L):
    inputs and next tokens with -100 on prompt and padding. Returns logps (N,) fp32 and the number of
    response tokens (N,). fused: from the hidden states, never holding the (N, L, V) logits
    (kernels.linear_logprobs_entropy)."""
    logp, _ = token_logprobs(model, x, y, fused=fused, entropy=False)  # (N, L), 0 where y is -100; no entropy
    return logp.sum(-1), (y != -100).sum(-1)


if __name__ == "__main__":
    config = configure(globals(), choices=dict(loss_type=LOSS_TYPES, ref_mode=("precompute", "online"),
                                               init_from=("sft", "resume"), template=("plain", "instruction"),
                                               labeler=("human", "reward", "ai")))
    if not 0 <= label_smoothing < 0.5:
        raise UserError(f"--label_smoothing={label_smoothing}: must be in [0, 0.5)")
    if desirable_weight < 0 or undesirable_weight <= 0:
        raise UserError(f"KTO's weights: --desirable_weight={desirable_weight:g} must be >= 0 (0: balanced) and "
                        f"--undesirable_weight={undesirable_weight:g} > 0")
    if online and loss_type == "kto":
        raise UserError("--online labels pairs, and KTO trains on unpaired thumbs", fix="use a paired --loss_type "
                        "(sigmoid, ipo, hinge, robust, simpo)")
    if online and (temperature <= 0 or n_annotators < 1):
        raise UserError(f"--online needs two different samples per prompt and someone to judge them: "
                        f"--temperature={temperature:g} must be > 0 and --n_annotators={n_annotators} >= 1")
    rt = common.setup(device, dtype, seed, out_dir)
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
    if online:  # fresh samples every step: no reference log-probs to precompute
        ref_mode = "online"
        rm, _, rm_gain, rm_bias = common.load_reward_model(reward_path, vocab, rt.device) if labeler == "reward" else (None,) * 4
        if labeler == "ai":  # RLAIF (Guo et al. 2024's own setting: an AI labeler)
            judge, jtok, a_id, b_id, principles = rlaif.load_judge(judge_path, judge_principles, rt.device)

    # ----------------------------------------------------------------------------- data
    kto = loss_type == "kto"
    A, B_ = ("ids", "kl_ids") if kto else ("chosen", "rejected")  # the two sequences of a row, in one batch

    def load_rows(path):
        """The training rows from any of data.load_preferences' formats (or, for KTO, unpaired thumbs rows):
        DPO: dicts chosen, rejected (prompt + response ids), n_prompt. KTO: dicts ids, n_prompt, desirable
        (a pair gives a desirable chosen and an undesirable rejected row) and kl_ids, the row's prompt with
        the response of the next row of another prompt (the mismatched pair for z0). Identical chosen and
        rejected carry no preference: skipped and counted; responses the vocabulary cannot spell too.
        Over-long sequences are cut."""
        if not os.path.exists(path):
            raise MissingFile("no preference data", path, "run `python feedback.py` first (it writes the built-in "
                              "task's simulated preferences there) or pass --data_path=your.jsonl (README: "
                              "Dataset formats)")
        unpaired = "label" in data.read_jsonl(path)[0]
        if unpaired and not kto:
            raise UserError("unpaired rows (thumbs up / down): only KTO trains on them", path, "pass --loss_type=kto")
        rows = data.load_unpaired(path) if unpaired else data.load_preferences(path, template)
        out, same, bad, cut, first_bad = [], 0, 0, 0, ""
        for r in rows[:max_items or None]:
            texts = [r["completion"]] if unpaired else [r["chosen"], r["rejected"]]
            if texts[0] == texts[-1] and not unpaired:
                same += 1
                continue
            p = tok.encode(r["prompt"], r["where"])
            if not p or len(p) >= T:
                raise UserError(f"prompt has {len(p)} tokens; it needs 1..{T - 1} (the model's context is {T})",
                                r["where"], "shorten it")
            try:  # user text with characters a compact vocabulary cannot spell
                ids = [tok.encode(t, r["where"]) for t in texts]
            except UserError as e:
                bad, first_bad = bad + 1, first_bad or str(e)
                continue
            cut += sum(len(p) + len(c) > T for c in ids)
            ids = [(p + c)[:T] for c in ids]
            if not kto:
                out.append(dict(chosen=ids[0], rejected=ids[1], n_prompt=len(p)))
            else:
                labels = [r["label"]] if unpaired else [True, False]
                out += [dict(ids=i, n_prompt=len(p), desirable=y, prompt=r["prompt"]) for i, y in zip(ids, labels)]
        if rt.master and (same or bad or cut):
            print(f"{path}: skipped {same} pairs with identical chosen and rejected, {bad} with tokens outside "
                  f"the model's vocabulary; cut {cut} responses longer than the context ({T} tokens)")
        if not out:
            raise UserError(f"no usable rows ({same} pairs had identical chosen and rejected, {bad} did not "
                            f"encode: {first_bad})", path)
        for i, it in enumerate(out if kto else []):  # KTO's mismatched pair: the next row with another prompt
            j = next((k % len(out) for k in range(i + 1, i + len(out)) if out[k % len(out)]["prompt"] != it["prompt"]), None)
            if j is None:
                raise UserError("KTO's reference point needs responses to at least 2 different prompts", path)
            it["kl_ids"] = (it["ids"][:it["n_prompt"]] + out[j]["ids"][out[j]["n_prompt"]:])[:T]
        return out

    train = [] if online and builtin else load_rows(data_path)
    # online: only the prompts are kept (the built-in task's train prompts, or the prompts of data_path's rows)
    train_prompts = (task.prompts("train") if builtin else
                     list(dict.fromkeys(tok.decode(r["chosen"][:r["n_prompt"]]) for r in train))) if online else []
    train = [] if online else train
    beside = os.path.join(os.path.dirname(data_path), os.path.basename(data_path).replace("_train.jsonl", "_test.jsonl"))
    val_file = val_path or (beside if data_path.endswith("_train.jsonl") else "")  # feedback.py's held-out rows
    val = load_rows(val_file) if val_file and os.path.exists(val_file) and rt.master else []
    eval_prompts = [p for p in task.prompts("test") for _ in range(eval_repeats)] if builtin else []
    w_d = desirable_weight
    if kto:
        n_d = sum(r["desirable"] for r in train)
        if n_d in (0, len(train)):
            raise UserError(f"KTO needs thumbs up and thumbs down, but all {len(train)} rows are "
                            f"{'up' if n_d else 'down'}", data_path, "add rows of the other label (or use pairs)")
        w_d = desirable_weight or (len(train) - n_d) / n_d  # lambda_D n_D = lambda_U n_U (with lambda_U = 1)
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

    def collate(rows):
        """Both sequences of every row stacked into one right-padded batch (2B, L-1): rows 0..B-1 the chosen
        (KTO: the response), B..2B-1 the rejected (KTO: the mismatched pair), so one forward scores both
        (half the kernel launches, one pass of the weights)."""
        x, y = data.collate_completions([(r[A], r["n_prompt"]) for r in rows] +
                                        [(r[B_], r["n_prompt"]) for r in rows], tok.eot)
        return x.to(rt.device), y.to(rt.device)

    if need_ref and ref_mode == "precompute":  # the reference's sequence log-probs of every row, once
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
        """Loss and logged numbers for a list of rows: one concatenated forward of both sequences."""
        B = len(rows)
        x, y = collate(rows)
        with rt.ctx:
            logps, lens = sequence_logps(m, x, y, fused_lm_head)
        ref_c = ref_r = None
        if need_ref and ref_mode == "online":
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
            return losses.mean(), stats
        losses, rc, rr = dpo_loss(logps[:B], logps[B:], ref_c, ref_r, lens[:B], lens[B:], loss_type, beta,
                                  label_smoothing, simpo_beta, simpo_gamma, rpo_alpha)
        stats = torch.stack([losses.mean().detach(), rc.mean(), rr.mean(), (rc - rr).mean(), (rc > rr).float().mean(),
                             logps[:B].mean().detach(), logps[B:].mean().detach()])
        return losses.mean(), stats

    # (KTO: chosen / rejected are the desirable / undesirable rows, accuracies the share on the side of z0
    # their label asks for, and z0 its reference point)
    STATS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
             "logps/chosen", "logps/rejected") + (("z0",) if kto else ())

    # ----------------------------------------------------------------------------- optimizer
    optimizer = common.configure_optimizer(model, lr, weight_decay, rt.device_type)
    rng, iter_num = common.resume(ckpt, rt, seed, optimizer)  # the data order: the same on every rank
    raw_model, model = model, common.wrap(model, rt, compile)

    def online_batch():
        """Online DPO's data (Guo et al. 2024, Algorithm 1): batch_size prompts (this rank's share of the
        global draw), two samples each from the current policy, labelled now. Returns the rows to train on
        (online_pairs), the pairs labelled on every rank, and the samples' mean gold (built-in task)."""
        prompts = [train_prompts[rng.randrange(len(train_prompts))] for _ in range(batch_size * rt.world_size)]
        prompts = prompts[rt.rank::rt.world_size]
        twice = [p for p in prompts for _ in range(2)]
        with torch.no_grad(), rt.ctx:
            texts, lengths, _, seqs = data.sample_responses(raw_model, tok, twice, max_new_tokens, temperature,
                                                            with_ids=True)
            if labeler == "human":
                votes = human_votes(prompts, texts[::2], texts[1::2], random, n_annotators, label_temperature)
            elif labeler == "ai":  # the judge, both orders; a tie or an unreadable pair says nothing
                lo = rlaif.judge_pairs(judge, jtok, [(random.choice(principles), p, a, b) for p, a, b in
                                                     zip(prompts, texts[::2], texts[1::2])], a_id, b_id)[0]
                votes = [0.5 if x is None or x == 0 else float(x > 0) for x in lo]
            else:  # the reward model as the labeler: the higher score wins, a tie says nothing
                s = score_sequences(rm, seqs, tok.eot, rm_gain, rm_bias).tolist()
                votes = [0.5 if a == b else float(a > b) for a, b in zip(s[::2], s[1::2])]
        rows = online_pairs(seqs, [len(q) - n for q, n in zip(seqs[::2], lengths[::2])], votes)
        n = torch.tensor(float(len(rows)), device=rt.device)
        if rt.ddp:
            torch.distributed.all_reduce(n)
        gold = sum(task.gold(p, t) for p, t in zip(twice, texts)) / len(texts) if builtin else float("nan")
        # a micro-batch with no usable pair (every pair tied): one tie, whose gradient is exactly 0 (chosen is
        # rejected), keeps every DDP rank's forward and backward in step
        return rows or [dict(chosen=seqs[0], rejected=seqs[0], n_prompt=len(seqs[0]) - lengths[0])], int(n.item()), gold

    @torch.no_grad()
    def evaluate():
        """Preference metrics on held-out pairs; on the built-in task the gold score of fresh samples
        and their sequence KL to the reference (the SFT model; see data.sample_responses)."""
        raw_model.eval()  # rank 0 only: the raw model, since DDP's forward would wait for the other ranks
        out = {"labels": n_labels}  # preference labels trained on so far (offline: the rows of data_path)
        if val:
            stats = torch.stack([batch_loss(raw_model, val[i:i + batch_size])[1] * len(val[i:i + batch_size])
                                 for i in range(0, len(val), batch_size)]).sum(0) / len(val)
            out.update({"val_" + k: v for k, v in zip(STATS, stats.tolist())})
        if eval_prompts:
            with rt.ctx:
                texts, lengths, kls = data.sample_responses(raw_model, tok, eval_prompts, max_new_tokens,
                                                            temperature, ref=ref_model.to(rt.device))
            out.update(task.report(eval_prompts, texts, lengths, kls))
            for p, r in list(zip(eval_prompts, texts))[::eval_repeats][:n_print]:
                print(f"  {p!r} -> {r!r}  gold {task.gold(p, r):+.2f}")
            if need_ref and ref_mode == "precompute" and rt.device_type == "cuda":
                ref_model.to("cpu")
        raw_model.train()
        return out

    # ----------------------------------------------------------------------------- training loop
    start_iter = iter_num if ckpt else None
    n_labels = (ckpt or {}).get("labels", 0) if online else len(train)
    t0, sums, n_sums, gold_sum = time.time(), 0, 0, 0.0
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
            # DDP: all ranks draw the same batch_size x world pairs, each keeps every world-th; the loss is a
            # mean over pairs, so N processes train exactly like one process at N x batch_size
            if online:  # sampled and labelled now, from the policy being trained
                rows, n_new, gold = online_batch()
                n_labels, gold_sum = n_labels + n_new, gold_sum + gold
            else:
                rows = [train[rng.randrange(len(train))] for _ in range(batch_size * rt.world_size)][rt.rank::rt.world_size]
            if rt.ddp:  # all-reduce gradients on the last micro-batch only
                model.require_backward_grad_sync = micro == grad_accum - 1
            loss, stats = batch_loss(model, rows)
            if not torch.isfinite(loss):
                raise RuntimeError(f"iter {iter_num}: loss is {loss.item()}; lower --lr (or raise --beta for "
                                   f"ipo) or check the data")
            (loss / grad_accum).backward()
            sums, n_sums = sums + stats, n_sums + 1
        common.optimizer_step(optimizer, model, grad_clip)
        iter_num += 1
        if iter_num % log_interval == 0 and rt.master:  # rank 0's own pairs: means over the interval
            dt = (time.time() - t0) / log_interval
            extra = dict(labels=n_labels, gold=gold_sum / n_sums) if online else {}  # (gold of the samples labelled)
            log_metrics(rt.metrics_path, {"iter": iter_num, **dict(zip(STATS, (sums / n_sums).tolist())), **extra,
                                          "lr": optimizer.param_groups[0]["lr"], "ms_per_iter": 1000 * dt})
            t0, sums, n_sums, gold_sum = time.time(), 0, 0, 0.0
    common.finish(rt)
