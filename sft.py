"""
sft.py (goldRLHF): supervised fine-tuning, the first stage of RLHF (Ouyang et al. 2022, step 1).

Trains a GPT on demonstrations (prompt -> completion) with the loss on completion tokens only.
Default: a small GPT from scratch on the built-in review task (data.py), ~2 minutes on 2 CPU cores.
Your data: --data=file.jsonl with {"prompt","completion"} or {"messages"} lines, and usually
--init_from=gpt2 (real GPT-2 weights, full vocabulary).

    python sft.py                                    # built-in task
    python sft.py --init_from=gpt2 --data=my.jsonl --template=instruction
    torchrun --nproc_per_node=2 sft.py               # DDP

Writes out_dir/ckpt.pt (the next stages read it) and out_dir/metrics.jsonl.
"""
import os
import random
import time

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

import data
from configurator import MissingFile, UserError, configure
from model import (configure_optimizer, cosine_lr, load_model, log_metrics, model_args_of, restore_rng, rng_state,
                   save_checkpoint, setup)

# ----------------------------------------------------------------------------- config
out_dir = "out/sft"  # checkpoint, metrics.jsonl go here
init_from = "scratch"  # 'scratch', 'resume' (from out_dir), 'gpt2'..'gpt2-xl', or a checkpoint / HF dir
data_path = "builtin"  # 'builtin' (the review task) or a JSONL file of {prompt, completion} / {messages}
val_path = ""  # JSONL for eval loss; empty: builtin uses held-out prompts, a file holds out 5%
template = "plain"  # prompt template for JSONL prompts: 'plain' or 'instruction'
n_demos = 20000  # built-in task: number of training demonstrations
# model, when init_from='scratch' (the built-in task's default is tiny)
n_layer = 4  # transformer blocks
n_head = 4  # attention heads
n_embd = 128  # width
block_size = 64  # context length in tokens
dropout = 0.0  # dropout probability
# optimisation
batch_size = 32  # sequences per micro-batch (per process)
grad_accum = 1  # micro-batches per optimizer step
max_iters = 1200  # optimizer steps
lr = 1e-3  # peak learning rate (use ~1e-5 for GPT-2 weights)
warmup_iters = 50  # linear warmup steps
weight_decay = 0.1  # AdamW weight decay on matrices
grad_clip = 1.0  # clip the global gradient norm (0: off)
# eval and logging
log_interval = 50  # print/log train loss every this many steps
eval_interval = 400  # eval loss and gold score every this many steps
eval_prompts = 100  # held-out prompts sampled for the gold score (built-in task)
max_new_tokens = 40  # response length limit when sampling
temperature = 1.0  # sampling temperature for eval samples
n_print = 3  # samples printed at each eval
# runtime
device = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...
dtype = "auto"  # 'auto' (bfloat16 on cuda), 'float32', 'bfloat16'
seed = 1337  # random seed (data order shared by all ranks; sampling offset by rank)
compile = False  # torch.compile the model
fused_lm_head = False  # log-probs straight from hidden states (kernels.linear_logprobs_entropy): no logits in memory

# ----------------------------------------------------------------------------- the loss
def sft_loss(logp, y, n_tokens=None):
    """Negative log-likelihood of the completion tokens, summed and divided by n_tokens (default: their
    count in y, the mean). logp (B, T): log-probs of y (B, T), which has -100 where there is no loss
    (logp is 0 there). Under DDP the loop passes the global batch's count / world size: DDP averages the
    ranks' gradients, so they add up to the gradient of the mean over the global batch, exactly what one
    process would compute."""
    return -logp.sum() / (n_tokens or (y != -100).sum().clamp(min=1))


def collate(rows, eot, batch_size=None):
    """rows: (ids, n_prompt) pairs -> right-padded x, y (batch_size, L - 1) long, L the longest row.
    x[t] = ids[t] is the input and y[t] = ids[t + 1] the token to predict (the shift by one), kept only
    where ids[t + 1] is a completion token: -100 on the prompt and the padding (no loss there)."""
    L = max(len(ids) for ids, _ in rows)
    x = torch.full((batch_size or len(rows), L - 1), eot, dtype=torch.long)
    y = torch.full((batch_size or len(rows), L - 1), -100, dtype=torch.long)
    for i, (ids, n_p) in enumerate(rows):
        x[i, :len(ids) - 1] = torch.tensor(ids[:-1])
        y[i, n_p - 1:len(ids) - 1] = torch.tensor(ids[n_p:])  # predict completion tokens only
    return x, y


if __name__ == "__main__":
    config = configure(globals())

    # ----------------------------------------------------------------------------- runtime
    rt = setup(device, dtype, seed)
    metrics_path = os.path.join(out_dir, "metrics.jsonl")
    if rt.master:
        os.makedirs(out_dir, exist_ok=True)

    # ----------------------------------------------------------------------------- model
    if init_from == "resume":
        model, vocab, ckpt = load_model(out_dir)
    elif init_from == "scratch":
        vocab = data.task_vocab() if data_path == "builtin" else None  # compact vocabulary: see data.py
        model, vocab, ckpt = load_model("scratch", model_args=dict(
            n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, dropout=dropout,
            vocab_size=len(vocab) if vocab else 50257), vocab=vocab)
    else:
        model, vocab, ckpt = load_model(init_from)
    tok = data.Tokenizer(vocab)
    T = model.config.block_size
    model.to(rt.device)

    # ----------------------------------------------------------------------------- data
    def tokenize(pairs):
        """(prompt, completion, where) -> list of (ids, n_prompt). The completion ends with <|endoftext|>
        so the model learns to stop; one longer than the context is cut, a prompt that fills it is an error."""
        out, cut = [], 0
        for prompt, completion, where in pairs:
            p = tok.encode(prompt, where)
            c = tok.encode(completion, where)
            if not c or c[-1] != tok.eot:
                c.append(tok.eot)
            if len(p) >= T:
                raise UserError(f"{where}: prompt has {len(p)} tokens, longer than the context ({T}); "
                                 f"shorten it or use a model with a larger block_size")
            cut += len(p) + len(c) > T
            out.append(((p + c)[:T], len(p)))
        if cut and rt.master:
            print(f"note: {cut} of {len(out)} examples were longer than {T} tokens and were cut")
        return out

    if data_path == "builtin":
        train = tokenize((p, c, f"builtin demo {i}") for i, (p, c) in enumerate(data.task_demos(n_demos, seed=0)))
        val = tokenize((p, c, f"builtin val {i}") for i, (p, c) in enumerate(data.task_demos(500, 1, "test")))
        eval_prompts_list = data.task_prompts("test")[:eval_prompts]
    else:
        rows = data.load_sft_jsonl(data_path, template)
        if val_path:
            train_rows, val_rows = rows, data.load_sft_jsonl(val_path, template)
        elif len(rows) >= 20:  # hold out the last 5%
            train_rows, val_rows = rows[:len(rows) - len(rows) // 20], rows[len(rows) - len(rows) // 20:]
        else:
            train_rows = val_rows = rows
            if rt.master:
                print(f"note: {data_path} has only {len(rows)} examples, too few to hold 5% out: training and "
                      f"evaluating on all of them (pass --val_path for a real validation set)")
        train, val = tokenize(train_rows), tokenize(val_rows)
        eval_prompts_list = []  # no gold scorer for your data: we print samples instead
        fits = lambda p: len(tok.encode(p)) <= T - max_new_tokens  # room left to sample a response
        print_prompts = [p for p, _, _ in val_rows if fits(p)][:n_print]

    def get_batch(split, rng, ranks=1):
        """A right-padded batch. x: inputs, y: next tokens with -100 on prompt and padding (no loss), and
        n_tok, the number of loss tokens in the global batch. Under DDP (ranks = world size) every rank draws
        the same global batch of batch_size x ranks rows (same rng) and keeps every ranks-th row: N processes
        at batch_size B train exactly like one process at N x B."""
        pool = train if split == "train" else val
        rows = [pool[rng.randrange(len(pool))] for _ in range(batch_size * ranks)]
        n_tok = sum(len(ids) - n_p for ids, n_p in rows)
        x, y = collate(rows[rt.rank % ranks::ranks], tok.eot, batch_size)
        return x.to(rt.device), y.to(rt.device), n_tok

    # ----------------------------------------------------------------------------- optimizer
    optimizer = configure_optimizer(model, lr, weight_decay, device_type=rt.device_type)
    iter_num = 0
    if init_from == "resume":
        optimizer.load_state_dict(ckpt["optimizer"])
        iter_num = ckpt["iter_num"]
    raw_model = model
    if compile:
        model = torch.compile(model)
    if rt.ddp:
        model = DDP(model, device_ids=[int(rt.device.split(":")[1])] if rt.device_type == "cuda" else None)

    @torch.no_grad()
    def evaluate():
        """Eval loss on held-out demonstrations; on the built-in task, the gold score of fresh samples."""
        raw_model.eval()  # rank 0 only: the raw model, since DDP's forward would wait for the other ranks
        rng = random.Random(0)
        losses = []
        for _ in range(10):
            x, y, _ = get_batch("val", rng)
            with rt.ctx:
                losses.append(sft_loss(raw_model(x, labels=y, entropy=False)[0], y).item())
        out = {"val_loss": sum(losses) / len(losses)}
        prompts = eval_prompts_list or print_prompts
        with rt.ctx:
            responses, lengths, _ = data.sample_responses(raw_model, tok, prompts, max_new_tokens, temperature)
        if eval_prompts_list:
            out.update(data.task_report(prompts, responses, lengths))
        for p, r in list(zip(prompts, responses))[:n_print]:
            print(f"  {p!r} -> {r!r}" + (f"  gold {data.gold(p, r):+.2f}" if eval_prompts_list else ""))
        raw_model.train()
        return out

    # ----------------------------------------------------------------------------- training loop
    rng = random.Random(seed)  # the same on every rank: each draws the global batch and keeps its share
    if init_from == "resume":  # continue the data order and sampling exactly where the checkpoint was
        restore_rng(ckpt.get("rng"), rng, rt)
    start_iter = iter_num
    t0 = time.time()
    model.train()
    while True:
        if (iter_num % eval_interval == 0 or iter_num == max_iters) and not (init_from == "resume" and iter_num == start_iter):
            if rt.master:  # (a resumed run's checkpoint was evaluated and saved already)
                log_metrics(metrics_path, {"iter": iter_num, **evaluate()})
            rng_now = rng_state(rng, rt)  # every rank's, after the eval's sampling
            if iter_num > 0 and rt.master:
                save_checkpoint(os.path.join(out_dir, "ckpt.pt"), dict(
                    model=raw_model.state_dict(), model_args=model_args_of(raw_model), optimizer=optimizer.state_dict(),
                    iter_num=iter_num, config=config, vocab=vocab, rng=rng_now))
        if iter_num >= max_iters:
            break
        for g in optimizer.param_groups:
            g["lr"] = cosine_lr(iter_num, lr, warmup_iters, max_iters)
        for micro in range(grad_accum):
            x, y, n_tok = get_batch("train", rng, rt.world_size)
            if rt.ddp:  # all-reduce gradients on the last micro-batch only
                model.require_backward_grad_sync = micro == grad_accum - 1
            with rt.ctx:
                logp, _ = model(x, labels=y, fused=fused_lm_head, entropy=False)  # log-probs of the next tokens (B, T)
                loss = sft_loss(logp, y, n_tok / rt.world_size)
            if not torch.isfinite(loss):
                raise RuntimeError(f"iter {iter_num}: loss is {loss.item()}; lower --lr or check the data")
            (loss / grad_accum).backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        iter_num += 1
        if iter_num % log_interval == 0 and rt.master:
            dt = (time.time() - t0) / log_interval
            log_metrics(metrics_path, {"iter": iter_num, "loss": loss.item(), "lr": optimizer.param_groups[0]["lr"],
                                       "ms_per_iter": 1000 * dt,
                                       "tokens_per_s": rt.world_size * grad_accum * x.numel() / dt})
            t0 = time.time()

    if rt.ddp:
        torch.distributed.destroy_process_group()
