"""
experiments/sweep_cases.py (goldRLHF): the case list of experiments/sweep_inputs.py (issue 32's sweep).
A case is Case(name, category, script, args, expect, names, check, setup):
    script   "sft.py" or "-m experiments.active"; args  the case's own options (after the script's tiny BASE
             ones, so they win); "{F}" in an arg is the fixtures folder, "{D}" the case's own out_dir
    expect   'refuse' (one line, exit 2, naming one of `names`) or 'run' (exit 0 and `check` passes)
    check    a name in sweep_inputs.CHECKS run after exit 0; setup  a name in sweep_inputs.SETUPS run before
Categories: range (every numeric key of every script, generated from the scripts' config lines), readers,
feedback, resume, grpo_user, formats, checkpoint (limits a loaded model sets), examples (issue 32's own list).
"""
import ast
import os
import re
from collections import namedtuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Case = namedtuple("Case", "name category script args expect names check setup", defaults=(None, None))
SCRIPTS = ("sft.py", "feedback.py", "rlaif.py", "reward.py", "ppo.py", "dpo.py", "grpo.py", "sample.py", "audit.py",
           "plot.py", "experiments/active.py", "experiments/overopt.py")

# ----------------------------------------------------------------------------- (a) every numeric key out of range
COUNT = re.compile(r"batch|iters|interval|size|tokens|^n_|max_|repeats|epochs|accum|ensemble|num_|labels")
ZERO_OK = re.compile(r"\(0[:\s]|\b0: |0 drops|0 means")  # the key's comment gives 0 a meaning (off, all, greedy)
SKIP = {  # numeric keys the sweep does not push out of range, and why
    "seed": "any integer is a seed",
    "unended_score": "a score: any real number (OpenAI's -1)",
    "length_bonus": "a negative bonus is a labeler preferring shorter responses: meaningful",
}
ZERO_LEGIT = {"warmup_iters": "no warmup", "n_print": "print none", "eval_prompts": "none sampled",
              "label_smoothing": "plain DPO", "active.py:n_rounds": "round 0 only"}


def numeric_keys(script):
    """[(key, default, comment)] of a script's int / float config globals (what configure() type-checks),
    read from its source: top-level `key = literal  # comment` lines, as configure() sees them."""
    src = open(os.path.join(ROOT, script), encoding="utf-8").read()
    comments = {m.group(1): m.group(2) for m in re.finditer(r"^(\w+)\s*=\s*.+?#\s*(.*)$", src, re.M)}
    out = []
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and isinstance(node.value, ast.Constant) and not node.targets[0].id.startswith("_"):
            k, v = node.targets[0].id, node.value.value
            if isinstance(v, (int, float)) and not isinstance(v, bool) and "configure(" in src:
                out.append((k, v, comments.get(k, "")))
    return out


def bad_values(key, comment, script=""):
    """The out-of-range values a key is tried with, or a skip reason (str)."""
    if key in SKIP:
        return SKIP[key]
    if key.isupper():
        return "a module constant (upper case), not an option"
    vals = [-1]
    zero_ok = ZERO_OK.search(comment) or key in ZERO_LEGIT or f"{script.split('/')[-1]}:{key}" in ZERO_LEGIT
    if (COUNT.search(key) or "> 0" in comment) and not zero_ok:
        vals.append(0)
    return vals


def range_cases():
    cases = []
    for script in SCRIPTS:
        run = f"-m {script[:-3].replace('/', '.')}" if script.startswith("experiments/") else script
        for key, _, comment in numeric_keys(script):
            vals = bad_values(key, comment, script)
            if isinstance(vals, str):
                continue
            for v in vals:
                name = f"{script.split('/')[-1][:-3]}.{key}={v}"
                cases.append(Case(name, "range", run, [f"--{key}={v}"], "refuse", (key,)))
    return cases


# ----------------------------------------------------------------------------- (b) every reader
BAD = {"missing": "{F}/no_such_file.jsonl", "dir": "{F}/a_dir", "nonutf8": "{F}/latin1.jsonl"}
BAD_PY = {"missing": "{F}/.py/no_such_file.py", "dir": "{F}/.py/a_dir.py", "nonutf8": "{F}/.py/latin1.py"}  # (hidden:
# tests/test_layout.py parses every .py file of the repository but those under a dot folder)
BAD_CKPT = {"missing": "{F}/no_such/ckpt.pt", "dir": "{F}/a_dir", "nonutf8": "{F}/latin1.pt"}
READERS = [  # (script, option, kind, extra args); kind 'ckpt' takes checkpoint-shaped bad paths
    ("sft.py", "data_path", "file", []), ("sft.py", "val_path", "file", ["--data_path={F}/sft_chat.jsonl"]),
    ("sft.py", "init_from", "ckpt", []),
    ("feedback.py", "policy_path", "ckpt", []), ("feedback.py", "anchor_path", "ckpt", []),
    ("rlaif.py", "principles", "file", []), ("rlaif.py", "judge", "ckpt", ["--mode=label"]),
    ("rlaif.py", "policy_path", "ckpt", []), ("rlaif.py", "pairs_path", "file", ["--mode=label", "--judge={F}/judge"]),
    ("reward.py", "sft_path", "ckpt", []), ("reward.py", "data_path", "file", []),
    ("reward.py", "test_path", "file", []), ("reward.py", "init_from", "ckpt", []),
    ("ppo.py", "sft_path", "ckpt", []), ("ppo.py", "reward_path", "ckpt", []), ("ppo.py", "data_path", "file", []),
    ("dpo.py", "sft_path", "ckpt", []), ("dpo.py", "data_path", "file", []), ("dpo.py", "val_path", "file", []),
    ("dpo.py", "reward_path", "ckpt", ["--online=True", "--labeler=reward"]),
    ("dpo.py", "judge_path", "ckpt", ["--online=True", "--labeler=ai"]),
    ("dpo.py", "judge_principles", "file", ["--online=True", "--labeler=ai", "--judge_path={F}/judge"]),
    ("grpo.py", "sft_path", "ckpt", []), ("grpo.py", "reward_path", "ckpt", ["--reward_fns=rm"]),
    ("grpo.py", "judge_path", "ckpt", ["--reward_fns=judge"]),
    ("grpo.py", "judge_principles", "file", ["--reward_fns=judge", "--judge_path={F}/judge"]),
    ("grpo.py", "data_path", "file", ["--reward_fns=length"]),
    ("sample.py", "init_from", "ckpt", []), ("sample.py", "prompt_file", "file", []),
    ("sample.py", "reward_path", "ckpt", ["--best_of=2"]),
    ("audit.py", "data_path", "file", []), ("audit.py", "reward_path", "ckpt", []),
    ("-m experiments.active", "sft_path", "ckpt", []), ("-m experiments.active", "pool_path", "file", []),
    ("-m experiments.active", "test_path", "file", []),
]


def reader_cases():
    cases = []
    for script, opt, kind, extra in READERS:
        for how in BAD:
            path = (BAD_CKPT if kind == "ckpt" else BAD)[how]
            stem = script.split("/")[-1].split(".")[-2 if script.endswith(".py") else -1]
            cases.append(Case(f"{stem}.{opt}:{how}", "readers", script, extra + [f"--{opt}={path}"], "refuse", (path,)))
    for how, path in BAD.items():  # the other readers: grpo's reward function file, a config file, plot's files
        py = BAD_PY[how]
        cases.append(Case(f"grpo.reward_fns_file:{how}", "readers", "grpo.py", [f"--reward_fns={py}:my_reward"],
                          "refuse", (py,)))
        cases.append(Case(f"sft.config_file:{how}", "readers", "sft.py", [py], "refuse", (py,)))
        cases.append(Case(f"plot.file:{how}", "readers", "plot.py", [path], "refuse", (path,)))
    for script, opt in (("sft.py", "data_path"), ("dpo.py", "data_path"), ("reward.py", "data_path")):
        for how, path in (("empty", "{F}/empty.jsonl"), ("malformed", "{F}/malformed.jsonl")):
            cases.append(Case(f"{script[:-3]}.{opt}:{how}", "readers", script, [f"--{opt}={path}"], "refuse", (path,)))
    return cases


# ----------------------------------------------------------------------------- (c)-(g) hand-written cases
CASES = [
    # (c) feedback shapes (issue 32 "Why" 1-3)
    Case("reward.thumbs_one_per_prompt", "feedback", "reward.py", ["--label_kind=binary", "--data_path={F}/thumbs.jsonl"], "run", None, "finite_gain"),
    Case("reward.thumbs_01", "feedback", "reward.py", ["--label_kind=binary", "--data_path={F}/thumbs01.jsonl"], "run", None, "finite_gain"),
    Case("reward.ratings_one_per_prompt", "feedback", "reward.py", ["--label_kind=likert", "--data_path={F}/ratings.jsonl"], "run", None, "finite_gain"),
    Case("reward.float_ratings", "feedback", "reward.py", ["--label_kind=likert", "--data_path={F}/ratings_float.jsonl"], "run", None, "finite_gain"),
    Case("reward.all_thumbs_up", "feedback", "reward.py", ["--label_kind=binary", "--data_path={F}/thumbs_all_up.jsonl"], "refuse", ("{F}/thumbs_all_up.jsonl",)),
    Case("reward.ties_only_pairwise", "feedback", "reward.py", ["--label_kind=pairwise", "--data_path={F}/ties_only.jsonl"], "refuse", ("{F}/ties_only.jsonl",)),
    Case("dpo.ties_only", "feedback", "dpo.py", ["--data_path={F}/ties_only.jsonl"], "refuse", ("{F}/ties_only.jsonl",)),
    Case("reward.n_norm=1", "feedback", "reward.py", ["--n_norm=1"], "refuse", ("n_norm",)),
    Case("reward.mixed_ties_pairwise", "feedback", "reward.py", ["--label_kind=pairwise", "--data_path={F}/ties_mixed.jsonl"], "run", None, "skipped_ties"),
    Case("dpo.mixed_ties", "feedback", "dpo.py", ["--data_path={F}/ties_mixed.jsonl"], "run", None, "skipped_ties"),
    Case("reward.mixed_ties_rao_kupper", "feedback", "reward.py", ["--label_kind=ties", "--data_path={F}/ties_mixed.jsonl"], "run", None, "finite_gain"),
    # (d) resume and overwrite (issue 32 "Why" 7-10)
    *[Case(f"{s[:-3]}.resume_nothing", "resume", s, ["--init_from=resume"], "refuse", (("out_dir", "resume"), ("{D}", "resume")))
      for s in ("sft.py", "reward.py", "dpo.py", "ppo.py", "grpo.py")],
    *[Case(f"{s[:-3]}.fresh_over_checkpoint", "resume", s, [], "refuse", ("--overwrite",), "ckpt_unchanged", "copy_ckpt")
      for s in ("sft.py", "reward.py", "dpo.py", "ppo.py", "grpo.py")],
    *[Case(f"{s[:-3]}.out_dir_is_sft_folder", "resume", s, ["--sft_path={D}/ckpt.pt"], "refuse", ("out_dir", "sft_path"), "ckpt_unchanged", "copy_sft")
      for s in ("reward.py", "dpo.py", "ppo.py")],
    Case("sft.resume_changed_n_layer", "resume", "sft.py", ["--init_from=resume", "--n_layer=3", "--max_iters=8"], "refuse", ("n_layer",), None, "copy_sft"),
    Case("sft.resume_changed_n_embd", "resume", "sft.py", ["--init_from=resume", "--n_embd=64", "--max_iters=8"], "refuse", ("n_embd",), None, "copy_sft"),
    Case("sft.kill9_resume_metrics", "resume", "sft.py", ["--init_from=resume", "--max_iters=16", "--eval_interval=4", "--log_interval=1"], "run", None, "no_repeated_iter", "killed_sft"),
    # (e) the stage knows what it optimises (issue 32 "Why" 6)
    Case("grpo.user_prompts_gold", "grpo_user", "grpo.py", ["--data_path={F}/user_prompts.jsonl"], "refuse", ("reward_fns",)),
    Case("grpo.user_prompts_format", "grpo_user", "grpo.py", ["--data_path={F}/user_prompts.jsonl", "--reward_fns=format"], "refuse", ("reward_fns",)),
    Case("grpo.user_prompts_length", "grpo_user", "grpo.py", ["--data_path={F}/user_prompts.jsonl", "--reward_fns=length"], "run", None, "no_gold"),
    # (f) the data people have (issue 32 "What to build" 6)
    Case("dpo.ultrafeedback", "formats", "dpo.py", ["--data_path={F}/ultrafeedback.jsonl", "--sft_path={F}/sft_chat/ckpt.pt"], "run", None, "ckpt"),
    Case("reward.ultrafeedback", "formats", "reward.py", ["--data_path={F}/ultrafeedback.jsonl", "--sft_path={F}/sft_chat/ckpt.pt"], "run", None, "finite_gain"),
    Case("sft.trl_conversational_prompt_completion", "formats", "sft.py", ["--data_path={F}/trl_prompt_completion.jsonl", "--compact_vocab=True"], "run", None, "ckpt"),
    Case("dpo.kto_unpaired_conversational", "formats", "dpo.py", ["--loss_type=kto", "--data_path={F}/trl_unpaired.jsonl", "--sft_path={F}/sft_chat/ckpt.pt"], "run", None, "ckpt"),
    Case("dpo.kto_thumbs_01", "formats", "dpo.py", ["--loss_type=kto", "--data_path={F}/thumbs01.jsonl"], "run", None, "ckpt"),
    # (g) constraints that need the checkpoint ("What to build" 1): the fixture SFT model reads 64 tokens
    *[Case(f"{s[:-3]}.max_new_tokens=context", "checkpoint", s, ["--max_new_tokens=64"] + extra, "refuse",
           ("max_new_tokens",), None, setup) for s, extra, setup in (
        ("sft.py", ["--init_from=resume", "--max_iters=200"], "copy_sft"), ("reward.py", [], None), ("ppo.py", [], None),
        ("dpo.py", [], None), ("grpo.py", [], None), ("sample.py", [], None), ("feedback.py", [], None),
        ("rlaif.py", [], None))],
    Case("ppo.prompt_too_long", "checkpoint", "ppo.py", ["--data_path={F}/long_prompts.jsonl"], "refuse", ("{F}/long_prompts.jsonl",)),
    Case("dpo.response_oov", "checkpoint", "dpo.py", ["--data_path={F}/pairs_oov.jsonl"], "refuse", ("{F}/pairs_oov.jsonl",)),
    Case("sample.prompt_oov", "checkpoint", "sample.py", ["--prompt=Quantum zebra?"], "refuse", ("--prompt",)),
    # (h) issue 32's own examples ("Why" 5)
    Case("example:sft.batch_size=0", "examples", "sft.py", ["--batch_size=0"], "refuse", ("batch_size",)),
    Case("example:sft.eval_interval=0", "examples", "sft.py", ["--eval_interval=0"], "refuse", ("eval_interval",)),
    Case("example:sample.max_new_tokens=0", "examples", "sample.py", ["--max_new_tokens=0"], "refuse", ("max_new_tokens",)),
    Case("example:sft.n_head=3_n_embd=32", "examples", "sft.py", ["--n_head=3", "--n_embd=32"], "refuse", ("n_head",)),
    Case("example:dpo.ipo_beta=0", "examples", "dpo.py", ["--loss_type=ipo", "--beta=0"], "refuse", ("beta",)),
    Case("example:dpo.beta=-0.1", "examples", "dpo.py", ["--beta=-0.1"], "refuse", ("beta",)),
    Case("example:ppo.beta=-0.1", "examples", "ppo.py", ["--beta=-0.1", "--adaptive_kl=False"], "refuse", ("beta",)),
    Case("example:grpo.kl_coef=-0.1", "examples", "grpo.py", ["--kl_coef=-0.1"], "refuse", ("kl_coef",)),
    Case("example:dpo.grad_accum=0", "examples", "dpo.py", ["--grad_accum=0"], "refuse", ("grad_accum",)),
    Case("example:ppo.lam=2", "examples", "ppo.py", ["--lam=2"], "refuse", ("lam",)),
    Case("example:sample.temperature=-1", "examples", "sample.py", ["--temperature=-1"], "refuse", ("temperature",)),
]
ISSUE_CASES = [c.name for c in CASES]  # every case issue 32 names (the test checks they stay in the list)


def all_cases():
    return range_cases() + reader_cases() + CASES
