"""
TRL's trainers on the same model, data shapes and batch settings as bench/stages.py's rows, timed per
optimizer step. Imported by bench/stages.py when `trl` is installed (pip install trl); not a dependency.

Each trainer gets a Hugging Face GPT2LMHeadModel (or GPT2ForSequenceClassification) holding the very
weights of our random model (exported with model.to_hf), pre-tokenized random data of the same shapes
(B sequences of T tokens; B pairs for reward / DPO), bf16 mixed precision on CUDA (fp32 master weights,
as ours), and runs warmup + reps optimizer steps; a callback times each step (CUDA-synchronised) and we
keep the median of the last reps. A step is what the trainer does per optimizer step: collation and
padding included, as a user pays for them. DPO's reference log-probs are precomputed before training
(precompute_ref_log_probs=True), as our dpo.py default and our bench row. TRL has no PPO trainer any more
(removed in 2025), so there is no TRL PPO row.

Each trainer runs twice: "defaults", its config as shipped (TRL 1.x's SFT / Reward / DPO / GRPO configs
default to gradient_checkpointing=True: activations recomputed in backward), and "tuned", the fastest
settings a user would pick for this model size: gradient_checkpointing=False, and on CUDA
use_liger_kernel=True (Liger's fused kernels, when liger-kernel is installed). bench/stages.py compares our
rows with the faster of the two.
"""
import statistics
import tempfile
import time

import torch


def _tokenizer(V):
    """A stand-in tokenizer: "t5 t17" -> [5, 17]. TRL wants one for pad / eos ids, and DPOTrainer
    tokenizes its data itself (it takes no pre-tokenized dataset), so its data is such text."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(WordLevel({f"t{i}": i for i in range(V)}, unk_token="t0"))
    tok.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=f"t{V - 1}", pad_token=f"t{V - 1}")


def _step_timer(cuda):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        times = []

        def on_step_begin(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.t0)
    return StepTimer()


def settings(cuda):
    """[(label, config overrides)]: TRL as shipped, and tuned."""
    import importlib.util
    tuned = dict(gradient_checkpointing=False)
    label = "tuned: no grad ckpt"
    if cuda and importlib.util.find_spec("liger_kernel") is not None:
        tuned["use_liger_kernel"], label = True, label + ", liger"
    return [("defaults: grad ckpt", {}), (label, tuned)]


def trl_rows(raw_model, cfg, B, T, P, N, reps, warmup, dev, only=("sft", "reward", "dpo", "grpo step")):
    """[(step, impl, seconds, throughput, unit, peak GiB, settings)] for TRL's SFT, reward, DPO and GRPO
    trainers (those in `only`), each as shipped and tuned: the same tuple as bench/stages.py's rows."""
    from datasets import Dataset
    from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel
    from trl import (DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, RewardConfig, RewardTrainer, SFTConfig,
                     SFTTrainer)

    from model import to_hf

    cuda = dev.type == "cuda"
    V = cfg["vocab_size"]
    tok = _tokenizer(V)
    g = torch.Generator().manual_seed(0)
    ids = lambda n, t: torch.randint(0, V - 1, (n, t), generator=g).tolist()
    steps = warmup + reps
    common = dict(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=B, max_steps=steps,
                  learning_rate=1e-5, report_to="none", save_strategy="no", logging_strategy="no",
                  bf16=cuda, use_cpu=not cuda, dataloader_num_workers=0, seed=0, disable_tqdm=True)
    rows = []

    with tempfile.TemporaryDirectory() as d:
        to_hf(raw_model, d)

        def load(cls, **kw):
            return cls.from_pretrained(d, torch_dtype=torch.float32, **kw).to(dev)

        def run(name, unit, per_step, make_trainer):
            if name not in only:
                return
            for label, overrides in settings(cuda):
                trainer = make_trainer(overrides)
                timer = _step_timer(cuda)
                trainer.add_callback(timer)
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                trainer.train()
                s = statistics.median(timer.times[warmup:])
                mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
                rows.append((name, f"TRL {type(trainer).__name__}", s, per_step / s, unit, mem, label))
                del trainer
                if cuda:
                    torch.cuda.empty_cache()

        # SFT: B x T tokens a step, loss on every token (as our sft row)
        data = Dataset.from_dict({"input_ids": ids(B * steps, T)})
        run("sft", "tok/s", B * T, lambda o: SFTTrainer(
            model=load(GPT2LMHeadModel), processing_class=tok, train_dataset=data,
            args=SFTConfig(**common, **o, max_length=T, packing=False, completion_only_loss=False)))

        # reward: B pairs of T tokens, Bradley-Terry
        data = Dataset.from_dict({"chosen_ids": ids(B * steps, T), "rejected_ids": ids(B * steps, T)})

        def reward_model():
            rm = load(GPT2ForSequenceClassification, num_labels=1)
            rm.config.pad_token_id = tok.pad_token_id
            return rm
        run("reward", "pairs/s", B, lambda o: RewardTrainer(
            model=reward_model(), processing_class=tok, train_dataset=data,
            args=RewardConfig(**common, **o, max_length=2 * T)))

        # DPO: B pairs, prompt P + response T - P tokens each side (the last one the eos TRL appends),
        # sigmoid loss, reference precomputed
        text = lambda n, t: [" ".join(f"t{i}" for i in row) + " " for row in ids(n, t)]
        data = Dataset.from_dict({"prompt": text(B * steps, P), "chosen": text(B * steps, T - P - 1),
                                  "rejected": text(B * steps, T - P - 1)})
        run("dpo", "pairs/s", B, lambda o: DPOTrainer(
            model=load(GPT2LMHeadModel), processing_class=tok, train_dataset=data,
            args=DPOConfig(**common, **o, max_length=T, precompute_ref_log_probs=True, beta=0.1)))

        # GRPO, a whole step: sample B responses of exactly N tokens (B / G prompts of P tokens, G = 8
        # responses each), score them (a random reward: the scorer's cost is not the point), then the
        # k3-KL (beta 0.04, reference forward) clipped update; as bench/stages.py's 'grpo step' row
        G = 8 if B % 8 == 0 else B
        data = Dataset.from_dict({"prompt": text(B * steps // G, P)})
        run("grpo step", "tok/s", B * N, lambda o: GRPOTrainer(
            model=load(GPT2LMHeadModel), processing_class=tok, train_dataset=data,
            reward_funcs=lambda prompts, completions, **kw: torch.rand(len(completions)).tolist(),
            args=GRPOConfig(**common, **o, num_generations=G, max_completion_length=N, beta=0.04, top_k=0,
                            generation_kwargs={"min_new_tokens": N})))
    return rows
