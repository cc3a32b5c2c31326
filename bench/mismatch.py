"""
The rollout / trainer mismatch (issue 36) at GPT-2 124M shapes: model.generate's KV-cached log-probs of the
sampled tokens against the update's own forward (model.response_logprobs, plain logits or the fused head)
for the same tokens, as the RL stages log it (common.mismatch_kl: KL(sampler || trainer), k3 per token,
summed over a response, mean over responses), in fp32 and in bf16 (autocast).

    python bench/mismatch.py                         # GPU: the table for bench/RESULTS.md (about a minute)
    python bench/mismatch.py --device=cpu --small    # seconds on CPU: smoke test (tests/test_mismatch.py)
    python bench/mismatch.py --init_from=gpt2        # real GPT-2 weights, where they can be loaded

Random weights give near-uniform next-token distributions, whose mismatch says little: their token embedding
(tied to the head) is scaled by --logit_scale so that sampling has an entropy like a trained model's; each
row prints the sampler's mean entropy per token beside the mismatch.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402
from model import GPT, GPTConfig, response_logprobs  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
p.add_argument("--init_from", default="random", help="'random' (GPT-2 124M shapes) or a GPT-2 name / HF dir")
p.add_argument("--batch", type=int, default=64, help="prompts sampled at once")
p.add_argument("--prompt_len", type=int, default=64)
p.add_argument("--new_tokens", type=int, default=128)
p.add_argument("--logit_scale", type=float, default=3.2, help="random weights: token embedding x this (3.2: ~3.5 nats)")
p.add_argument("--small", action="store_true", help="tiny model and sizes for a CPU smoke run")
p.add_argument("--seed", type=int, default=0)
args = p.parse_args()
if args.small:
    args.batch, args.prompt_len, args.new_tokens = 4, 8, 8
for k in ("batch", "prompt_len", "new_tokens"):
    if getattr(args, k) <= 0:
        p.error(f"--{k}={getattr(args, k)}: must be > 0")

torch.manual_seed(args.seed)
dev = torch.device(args.device)
if args.init_from == "random":
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=64, vocab_size=512, block_size=64) if args.small else GPTConfig()
    model = GPT(cfg)
    with torch.no_grad():
        model.transformer.wte.weight.mul_(args.logit_scale)
else:
    model = common.load_model(args.init_from)[0]
model.to(dev).eval()
V = model.config.vocab_size
prompts = torch.randint(0, V, (args.batch, args.prompt_len)).tolist()
eot = V - 1

print(f"device {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}), torch {torch.__version__}, "
      f"{args.init_from} weights, batch {args.batch}, prompt {args.prompt_len}, new tokens {args.new_tokens}")
print(f"{'dtype':10}{'head':7}{'entropy':>10}{'mismatch_kl':>14}{'per token':>12}{'max |dlogp|':>13}{'s':>7}")
for dtype in ("float32", "bfloat16"):
    ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if dtype == "bfloat16" else torch.autocast(dev.type, enabled=False)
    torch.manual_seed(args.seed)
    with torch.no_grad(), ctx:
        out = model.generate(prompts, args.new_tokens, eot, temperature=1.0)
    tokens, attn, mask, P = out["tokens"], out["attention_mask"], out["response_mask"], out["prompt_len"]
    labels = tokens[:, P:].masked_fill(~mask, -100)
    for fused in (False, True):
        t0 = time.time()
        with torch.no_grad(), ctx:
            logp, ent = response_logprobs(model, tokens, attn, labels, 1.0, fused)
        fmask = mask.float()
        kl = common.mismatch_kl(out["logprobs"], logp, fmask).item()
        d = ((logp.float() - out["logprobs"]) * fmask).abs().max().item()
        print(f"{dtype:10}{'fused' if fused else 'plain':7}{(ent.float() * fmask).sum().item() / fmask.sum().item():10.3f}"
              f"{kl:14.3e}{kl * mask.shape[0] / fmask.sum().item():12.3e}{d:13.3e}{time.time() - t0:7.2f}")
