"""
sft.py (goldRLHF): supervised fine-tuning, the first stage of RLHF (Ouyang et al. 2022, step 1).

Trains a GPT on demonstrations (prompt -> completion) with the loss on completion tokens only.
Default: a small GPT from scratch on the built-in review task (task.py).
Your data: --data_path=file.jsonl with {"prompt","completion"} or {"messages"} lines, and usually
--init_from=gpt2 (real GPT-2 weights, full vocabulary).

    python sft.py                                    # built-in task
    python sft.py --init_from=gpt2 --data_path=my.jsonl --template=instruction
    torchrun --nproc_per_node=2 sft.py               # DDP

Writes out_dir/ckpt.pt (the next stages read it) and out_dir/metrics.jsonl.
"""
import random
import time

import torch

import common
import data
import task
from common import log_metrics
from configurator import UserError, configure
from model import token_logprobs

# ----------------------------------------------------------------------------- config
out_dir = "out/sft"  # checkpoint, metrics.jsonl go here
init_from = "scratch"  # 'scratch', 'resume' (from out_dir), 'gpt2'..'gpt2-xl', or a checkpoint / HF dir
overwrite = False  # replace what an earlier run left in out_dir: its checkpoint, metrics.jsonl (a fresh run refuses to)
data_path = "builtin"  # 'builtin' (the review task) or a JSONL file of {prompt, completion} / {messages}
val_path = ""  # JSONL for eval loss; empty: builtin uses held-out prompts, a file holds out 5%
template = "plain"  # prompt template for JSONL prompts: 'plain' or 'instruction'
compact_vocab = False  # JSONL data: a vocabulary of only its tokens (fast on a CPU); a compact checkpoint's is widened to them
n_demos = 20000  # built-in task: number of training demonstrations [> 0]
# model, when init_from='scratch' (the built-in task's default is tiny)
n_layer = 4  # transformer blocks [> 0]
n_head = 4  # attention heads [> 0, divides n_embd]
n_embd = 128  # width [> 0]
block_size = 64  # context length in tokens [> 0]
dropout = 0.0  # dropout probability [>= 0, < 1]
# optimisation
batch_size = 32  # sequences per micro-batch (per process) [> 0]
grad_accum = 1  # micro-batches per optimizer step [>= 1]
max_iters = 800  # optimizer steps [> 0]
lr = 2e-3  # peak learning rate (use ~1e-5 for GPT-2 weights) [> 0]
warmup_iters = 50  # linear warmup steps [>= 0]
weight_decay = 0.1  # AdamW weight decay on matrices [>= 0]
grad_clip = 1.0  # clip the global gradient norm (0: off) [>= 0]
# eval and logging
log_interval = 50  # print/log train loss every this many steps [> 0]
eval_interval = 400  # eval loss and gold score every this many steps [> 0]
eval_prompts = 100  # held-out prompts sampled for the gold score (built-in task) [> 0]
max_new_tokens = 40  # response length limit when sampling [> 0]
temperature = 1.0  # sampling temperature for eval samples (0: greedy) [>= 0]
n_print = 3  # samples printed at each eval [>= 0]
# runtime
device = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...
dtype = "auto"  # 'auto' (bfloat16 on cuda), 'float32', 'bfloat16'
seed = 1337  # random seed (data order shared by all ranks; sampling offset by rank) [>= 0]
compile = False  # torch.compile the model
fused_lm_head = False  # log-probs straight from hidden states (kernels.linear_logprobs_entropy): no logits in memory

# ----------------------------------------------------------------------------- the loss
def sft_loss(logp, y, n_tokens=None):
    """NLL of the completion tokens, -sum(logp) / n_tokens (default: the mean over y != -100); logp, y (B, T).
    DDP passes the global batch's count / world size: the ranks' averaged gradient is the global mean's."""
    return -logp.sum() / (n_tokens or (y != -100).sum().clamp(min=1))


if __name__ == "__main__":
    config = configure(globals(), choices=dict(template=("plain", "instruction")))
    if compact_vocab and data_path == "builtin":
        raise UserError("--compact_vocab is for a JSONL file", fix="the built-in task's vocabulary is already compact")
    rt = common.setup(device, dtype, seed, out_dir, config, ("init_from", "data_path", "val_path"))

    # ----------------------------------------------------------------------------- model
    data_vocab = data.vocab_of(p + c for path in (data_path, val_path) if path  # the training (and validation) text's tokens
                               for p, c, _ in data.load_sft_jsonl(path, template)) if compact_vocab else None
    if init_from == "scratch":
        vocab = task.vocab() if data_path == "builtin" else data_vocab  # compact vocabulary: see data.py
        model, vocab, ckpt = common.load_model("scratch", model_args=dict(
            n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, dropout=dropout,
            vocab_size=len(vocab) if vocab else 50257), vocab=vocab)
    else:
        model, vocab, ckpt = common.load_model(out_dir if init_from == "resume" else init_from)
        if compact_vocab and init_from != "resume" and vocab is not None:  # a compact model, widened to the data
            new_vocab = sorted(set(vocab) | set(data_vocab))
            model, vocab = common.widen(model, vocab, new_vocab, block_size), new_vocab
    ckpt = ckpt if init_from == "resume" else None
    tok = data.Tokenizer(vocab)
    T = model.config.block_size
    room = data.prompt_room(max_new_tokens, {"model": T})  # the eval's samples must fit: checked before any step
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
        train = tokenize((p, c, f"builtin demo {i}") for i, (p, c) in enumerate(task.demos(n_demos, seed=0)))
        val = tokenize((p, c, f"builtin val {i}") for i, (p, c) in enumerate(task.demos(500, 1, "test")))
        eval_prompts_list = task.prompts("test")[:eval_prompts]
        data.encode_prompts(tok, eval_prompts_list, room, "the built-in task's test prompt")
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
        fits = lambda p: len(tok.encode(p)) <= room  # room left to sample a response
        print_prompts = [p for p, _, _ in val_rows if fits(p)][:n_print]

    def get_batch(split, rng, ranks=1):
        """Right-padded x, y (y: -100 on prompt and padding) and n_tok, the global batch's loss tokens. DDP: every
        rank draws the same batch_size x ranks rows and keeps every ranks-th, so N ranks train as one at N x B."""
        pool = train if split == "train" else val
        rows = [pool[rng.randrange(len(pool))] for _ in range(batch_size * ranks)]
        n_tok = sum(len(ids) - n_p for ids, n_p in rows)
        x, y = data.collate_completions(rows[rt.rank % ranks::ranks], tok.eot, batch_size)
        return x.to(rt.device), y.to(rt.device), n_tok

    # ----------------------------------------------------------------------------- optimizer
    optimizer = common.configure_optimizer(model, lr, weight_decay)
    rng, iter_num = common.resume(ckpt, rt, seed, optimizer)  # the data order: the same on every rank
    raw_model, model = model, common.wrap(model, rt, compile)

    @torch.no_grad()
    def evaluate():
        """Eval loss on held-out demonstrations; on the built-in task, the gold score of fresh samples."""
        raw_model.eval()  # rank 0 only: the raw model, since DDP's forward would wait for the other ranks
        rng = random.Random(0)
        losses = []
        for _ in range(10):
            x, y, _ = get_batch("val", rng)
            with rt.ctx:
                losses.append(sft_loss(token_logprobs(raw_model, x, y, entropy=False)[0], y).item())
        out = {"val_loss": sum(losses) / len(losses)}
        prompts = eval_prompts_list or print_prompts
        with rt.ctx:
            responses, lengths, _ = data.sample_responses(raw_model, tok, prompts, max_new_tokens, temperature)
        if eval_prompts_list:
            out.update(task.report(prompts, responses, lengths))
        for p, r in list(zip(prompts, responses))[:n_print]:
            print(f"  {p!r} -> {r!r}" + (f"  gold {task.gold(p, r):+.2f}" if eval_prompts_list else ""))
        raw_model.train()
        return out

    # ----------------------------------------------------------------------------- training loop
    start_iter = iter_num if ckpt else None
    t0 = time.time()
    model.train()
    while True:
        if common.eval_due(iter_num, eval_interval, max_iters, start_iter):
            common.evaluate_and_save(evaluate, out_dir, rt, iter_num, config, vocab, rng, raw_model, optimizer)
        if iter_num >= max_iters:
            break
        common.set_lr(optimizer, common.cosine_lr(iter_num, lr, warmup_iters, max_iters))
        for micro in range(grad_accum):
            x, y, n_tok = get_batch("train", rng, rt.world_size)
            if rt.ddp:  # all-reduce gradients on the last micro-batch only
                model.require_backward_grad_sync = micro == grad_accum - 1
            with rt.ctx:
                logp, _ = token_logprobs(model, x, y, fused=fused_lm_head, entropy=False)  # of the next tokens (B, T)
                loss = sft_loss(logp, y, n_tok / rt.world_size)
            if not torch.isfinite(loss):
                raise RuntimeError(f"iter {iter_num}: loss is {loss.item()}; lower --lr or check the data")
            (loss / grad_accum).backward()
        common.optimizer_step(optimizer, model, grad_clip)
        iter_num += 1
        if iter_num % log_interval == 0 and rt.master:
            dt = (time.time() - t0) / log_interval
            log_metrics(rt.metrics_path, {"iter": iter_num, "loss": loss.item(), "lr": optimizer.param_groups[0]["lr"],
                                       "ms_per_iter": 1000 * dt,
                                       "tokens_per_s": rt.world_size * grad_accum * x.numel() / dt})
            t0 = time.time()

    common.finish(rt)
