"""
experiments/sweep_inputs.py (goldRLHF): issue 32's sweep of a new user's inputs, re-runnable. Every case of
experiments/sweep_cases.py (every numeric key of every script out of range, every reader given a missing
path / a directory / a non-UTF-8 file, each feedback shape, resume and overwrite, grpo on user prompts, the
data formats people have, the issue's own examples) runs as a subprocess of the real script, with tiny
settings, and is classified:

    ran         exit 0 and the case's check passed (the correct behaviour)
    refused     exit 2, no traceback, exactly one stderr line `error: ...` naming the case's key or path
    traceback   "Traceback" in the output, or an exit status other than 0 and 2
    silent      exit 0 where a refusal was expected, exit 0 whose check failed (a silently wrong run),
                or still running at the per-case timeout (accepted, not refused)
    misleading  exit 2 with a line that does not name the key / path, or with several lines

    python -m experiments.sweep_inputs                          # fixtures once, then every case (~40 min, 2 cores)
    python -m experiments.sweep_inputs --only=feedback          # one category (range readers feedback resume ...)
    python -m experiments.sweep_inputs --match=dpo.             # the cases whose name contains this
    python -m experiments.sweep_inputs --summarize=True         # the table of every results*.jsonl so far

Fixtures (built once in out_dir/fixtures): a tiny SFT model of the built-in task, feedback.py's files on it,
a tiny reward model, a tiny SFT model with a chat vocabulary (for the message-list formats) and small
hand-written files. out_dir/results[_<only>][_<match>].jsonl gets one row per case; a table of counts is printed.
A case expecting a run that gets a clean refusal counts as `refused` and is listed (a format not loaded).
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

from configurator import configure
from experiments.sweep_cases import ROOT, all_cases

out_dir = "out/sweep"  # fixtures/, cases/<case>/ and results.jsonl go here
only = ""  # run one category: range, readers, feedback, resume, grpo_user, formats, checkpoint, examples ('' all)
match = ""  # run only the cases whose name contains this (comma-separated: any of these; '' all)
timeout = 120  # seconds per case; a case still running then is `silent` (accepted) [> 0]
summarize = False  # run nothing: the table of every results*.jsonl in out_dir (a case's newest row)
CLASSES = ("ran", "refused", "traceback", "silent", "misleading")

SFT_TINY = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--eval_prompts=4", "--n_demos=64", "--max_new_tokens=8",
            "--n_print=1", "--batch_size=4"]
BASE = {  # each script's tiny settings; a case's own args come after them (the last value of a key wins)
    "sft.py": SFT_TINY + ["--max_iters=4", "--eval_interval=4", "--log_interval=2"],
    "feedback.py": ["--policy_path={F}/sft/ckpt.pt", "--n_rounds=1", "--max_new_tokens=8"],
    "rlaif.py": ["--mode=demos", "--policy_path={F}/sft/ckpt.pt", "--n_pairs=4", "--max_new_tokens=8"],
    "reward.py": ["--sft_path={F}/sft/ckpt.pt", "--data_path={F}/feedback", "--max_iters=4", "--batch_size=8",
                  "--eval_interval=4", "--log_interval=2", "--n_norm=8", "--n_eval=1", "--max_new_tokens=8", "--n_print=1"],
    "ppo.py": ["--sft_path={F}/sft/ckpt.pt", "--reward_path={F}/reward/ckpt.pt", "--max_iters=2", "--batch_size=8",
               "--n_minibatches=2", "--ppo_epochs=1", "--eval_interval=2", "--eval_repeats=1", "--max_new_tokens=8", "--n_print=1"],
    "dpo.py": ["--sft_path={F}/sft/ckpt.pt", "--data_path={F}/feedback/pairwise_train.jsonl", "--max_iters=4",
               "--batch_size=4", "--eval_interval=4", "--log_interval=2", "--eval_repeats=1", "--max_new_tokens=8",
               "--n_print=1", "--max_items=64", "--reward_path={F}/reward/ckpt.pt", "--judge_path={F}/judge"],
    "grpo.py": ["--sft_path={F}/sft/ckpt.pt", "--reward_path={F}/reward/ckpt.pt", "--judge_path={F}/judge", "--max_iters=2",
                "--group_size=4", "--prompts_per_batch=2", "--minibatch_size=8", "--eval_interval=2", "--log_interval=1",
                "--eval_repeats=1", "--max_new_tokens=8", "--n_print=1"],
    "sample.py": ["--init_from={F}/sft", "--reward_path={F}/reward", "--max_prompts=4", "--max_new_tokens=8"],
    "audit.py": ["--data_path={F}/feedback/pairwise_test.jsonl"],
    "plot.py": [],
    "-m experiments.active": ["--sft_path={F}/sft/ckpt.pt", "--pool_path={F}/feedback/pairwise_train.jsonl",
                              "--test_path={F}/feedback/pairwise_test.jsonl", "--rules=random", "--seeds=1",
                              "--init_labels=8", "--round_size=8", "--n_rounds=1", "--max_iters=2", "--batch_size=4",
                              "--figure=none"],
    "-m experiments.overopt": ["--root={F}/a_dir", "--figure="],
}


def command(script, args, F, D):
    """The argv of a case: python, the script, its tiny settings, out_dir and device, then the case's args."""
    fill = lambda a: a.replace("{F}", F).replace("{D}", D)
    std = [f"--out_dir={D}"] if script not in ("audit.py", "-m experiments.overopt") else []
    if script not in ("plot.py", "-m experiments.overopt"):
        std.append("--device=cpu")
    return [sys.executable, *script.split(), *map(fill, BASE[script] + std + list(args))]


def run(cmd, limit):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.setdefault("TIKTOKEN_CACHE_DIR", os.path.join(os.path.dirname(ROOT), "shared", "tiktoken_cache"))
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit)
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        dec = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        return None, dec(e.stdout), dec(e.stderr) + f"\n(timeout after {limit} s)"


def names_in(line, names):
    """Does the line name one of `names` (a key: as a word, with or without --; a path: verbatim; a tuple:
    all of its items)?"""
    has = lambda n: n in line if "/" in n else re.search(rf"(?<!\w){re.escape(n.lstrip('-'))}(?!\w)", line)
    return any(all(map(has, n)) if isinstance(n, tuple) else has(n) for n in names)


def classify(expect, names, rc, out, err, check_ok=True):
    """One of CLASSES, from the exit status, the output and (after exit 0) the case's check."""
    if rc is None:
        return "silent"  # still running at the timeout: accepted, not refused
    if "Traceback" in out + err or rc not in (0, 2):
        return "traceback"
    if rc == 0:
        return "ran" if expect == "run" and check_ok else "silent"
    lines = [l for l in err.splitlines() if l.strip()]
    if len(lines) == 1 and lines[0].startswith("error:") and (expect == "run" or names_in(lines[0], names)):
        return "refused"
    return "misleading"


# ----------------------------------------------------------------------------- checks after exit 0, setups
def _ckpt(D):
    import torch
    return torch.load(os.path.join(D, "ckpt.pt"), map_location="cpu", weights_only=True)


def _finite(x):
    import torch
    return bool(torch.isfinite(torch.as_tensor(x, dtype=torch.float32)).all())


def _rows(D):
    with open(os.path.join(D, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f if l.strip()]


def _no_repeats(D):
    seen = set()
    for r in _rows(D):
        kind = (frozenset(r) - {"time"}, r.get("split"))
        if (kind, r.get("iter")) in seen:
            return False
        seen.add((kind, r.get("iter")))
    return True


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


CHECKS = {  # name -> f(out_dir, stdout + stderr) -> bool
    "ckpt": lambda D, out: os.path.exists(os.path.join(D, "ckpt.pt")),
    "finite_gain": lambda D, out: all(k in _ckpt(D) and _finite(_ckpt(D)[k]) for k in ("reward_gain", "reward_bias")),
    "skipped_ties": lambda D, out: any(re.search(r"skip", l, re.I) and re.search(r"\btie", l, re.I)
                                       and re.search(r"\d", l) for l in out.splitlines()),
    "ckpt_unchanged": lambda D, out: _sha(os.path.join(D, "ckpt.pt")) == open(os.path.join(D, "..", "sha")).read(),
    "no_repeated_iter": lambda D, out: _no_repeats(D),
    "no_gold": lambda D, out: not any("gold" in r for r in _rows(D)),
}


def _copy(src, D):
    os.makedirs(D, exist_ok=True)
    shutil.copy(src, os.path.join(D, "ckpt.pt"))
    open(os.path.join(D, "..", "sha"), "w").write(_sha(src))


def _killed_sft(F, D):
    """A run to 8 (checkpoints and evals every 4, logs every step) whose checkpoint is then the iteration-4
    one: what kill -9 after iteration 8's log, before its checkpoint, leaves."""
    for d, n in ((D + "_at4", 4), (D, 8)):
        run(command("sft.py", [f"--max_iters={n}", "--eval_interval=4", "--log_interval=1"], F, d), 300)
    shutil.copy(os.path.join(D + "_at4", "ckpt.pt"), os.path.join(D, "ckpt.pt"))


SETUPS = {
    "copy_ckpt": lambda F, D, script: _copy(f"{F}/reward/ckpt.pt" if script == "reward.py" else f"{F}/sft/ckpt.pt", D),
    "copy_sft": lambda F, D, script: _copy(f"{F}/sft/ckpt.pt", D),
    "killed_sft": lambda F, D, script: _killed_sft(F, D),
}


# ----------------------------------------------------------------------------- fixtures
def write(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def thumbs_by_score(rows, score):
    """Thumbs rows relabelled: up where score(prompt, completion) is above the rows' median (the tiny policy's
    own thumbs are all down, and KTO rightly refuses one label)."""
    scores = [score(r["prompt"], r["completion"]) for r in rows]
    mid = sorted(scores)[len(scores) // 2]
    return [dict(r, label=x > mid) for r, x in zip(rows, scores)]


def fixtures(F):
    """The models and files the cases read (built once; delete out_dir/fixtures to rebuild)."""
    if os.path.exists(os.path.join(F, "done")):
        return judge(F)
    os.makedirs(os.path.join(F, "a_dir"), exist_ok=True)
    steps = [("sft.py", SFT_TINY + ["--max_iters=150", "--eval_interval=150", "--log_interval=50", "--batch_size=16"], "sft"),
             ("feedback.py", BASE["feedback.py"], "feedback"),
             ("reward.py", BASE["reward.py"] + ["--max_iters=30", "--eval_interval=30", "--n_norm=16"], "reward")]
    for script, args, d in steps:
        rc, out, err = run([sys.executable, script, *[a.replace("{F}", F) for a in args], f"--out_dir={F}/{d}",
                            "--device=cpu"], 1800)
        assert rc == 0, f"fixture {d} failed:\n{out[-2000:]}\n{err[-2000:]}"
    read = lambda name: [json.loads(l) for l in open(f"{F}/feedback/{name}_train.jsonl")]
    first = lambda rows: list({r["prompt"]: r for r in rows}.values())  # one response per prompt
    strip = lambda t: t.replace("<|endoftext|>", "").strip()
    pairs, ties = read("pairwise")[:100], read("ties")
    # one response per prompt: a demonstration (good) or the tiny policy's sample (poor), rated by gold
    import task
    sampled = first(read("binary"))
    demo = dict(task.demos(2000, seed=7))
    rated = [(r["prompt"], demo[r["prompt"]] if i % 2 and r["prompt"] in demo else r["completion"])
             for i, r in enumerate(sampled)]
    golds = sorted(task.gold(p, c) for p, c in rated)
    cut = lambda q: golds[int(q * (len(golds) - 1))]
    thumbs = [dict(prompt=p, completion=c, label=task.gold(p, c) > cut(0.5)) for p, c in rated]
    ratings = [dict(prompt=p, completion=c, score=1 + sum(task.gold(p, c) > cut(q) for q in (0.2, 0.4, 0.6, 0.8)))
               for p, c in rated]
    write(f"{F}/thumbs.jsonl", thumbs)
    write(f"{F}/thumbs01.jsonl", [dict(r, label=int(r["label"])) for r in thumbs])
    write(f"{F}/thumbs_all_up.jsonl", [dict(r, label=True) for r in thumbs])
    write(f"{F}/ratings.jsonl", ratings)
    write(f"{F}/ratings_float.jsonl", [dict(r, score=r["score"] + (0.5 if r["score"] < 5 else -0.5) * (i % 2)) for i, r in enumerate(ratings)])
    write(f"{F}/ties_only.jsonl", [dict(r, tie=True) for r in ties[:200]])
    write(f"{F}/ties_mixed.jsonl", [dict(r, tie=i % 3 == 0) for i, r in enumerate(ties[:300])])
    chat = lambda p, c: [{"role": "user", "content": p}, {"role": "assistant", "content": strip(c)}]
    write(f"{F}/sft_chat.jsonl", [{"messages": chat(r["prompt"], r[k])} for r in pairs for k in ("chosen", "rejected")])
    write(f"{F}/ultrafeedback.jsonl", [dict(prompt=r["prompt"], chosen=chat(r["prompt"], r["chosen"]),
                                            rejected=chat(r["prompt"], r["rejected"])) for r in pairs])
    write(f"{F}/trl_prompt_completion.jsonl", [dict(prompt=chat(r["prompt"], "")[:1], completion=chat("", r["chosen"])[1:])
                                               for r in pairs])
    write(f"{F}/trl_unpaired.jsonl", [dict(prompt=chat(r["prompt"], "")[:1], completion=chat("", r["completion"])[1:],
                                           label=r["label"]) for r in thumbs_by_score(read("binary")[:100], task.gold)])
    prompts = sorted({r["prompt"] for r in read("pairwise")})
    write(f"{F}/long_prompts.jsonl", [{"prompt": p} for p in prompts[:5]] + [{"prompt": " ".join(prompts[:12])}])
    write(f"{F}/pairs_oov.jsonl", pairs[:5] + [dict(pairs[5], chosen=" Quantum tea.<|endoftext|>")] + pairs[6:20])
    write(f"{F}/user_prompts.jsonl", [{"prompt": a + " " + b} for a, b in zip(prompts, prompts[1:])])
    write(f"{F}/empty.jsonl", [])
    with open(f"{F}/malformed.jsonl", "w") as f:
        f.write(json.dumps(dict(pairs[0], completion=pairs[0]["chosen"])) + "\n{\"prompt\": \"I went\", \"chosen\": \n")
    os.makedirs(f"{F}/.py/a_dir.py", exist_ok=True)
    for name in ("latin1.jsonl", "latin1.pt", ".py/latin1.py"):
        with open(f"{F}/{name}", "wb") as f:
            f.write("{\"prompt\": \"caf\u00e9 na\u00efve\"}\n".encode("latin-1") + b"\xff\xfe\x80\n")
    rc, out, err = run([sys.executable, "sft.py", *SFT_TINY, "--max_iters=30", "--eval_interval=30", "--block_size=128",
                        f"--data_path={F}/sft_chat.jsonl", "--compact_vocab=True", f"--out_dir={F}/sft_chat",
                        "--device=cpu"], 1800)
    assert rc == 0, f"fixture sft_chat failed:\n{out[-2000:]}\n{err[-2000:]}"
    open(os.path.join(F, "done"), "w").write("ok\n")
    judge(F)


def judge(F):
    """A judge that can answer ' A' / ' B' (a GPT-2 vocabulary, 2 steps): the readers behind a judge need one."""
    if not os.path.exists(f"{F}/judge/ckpt.pt"):
        rc, out, err = run([sys.executable, "sft.py", *SFT_TINY, "--max_iters=2", "--eval_interval=2",
                            f"--data_path={F}/sft_chat.jsonl", f"--out_dir={F}/judge", "--device=cpu"], 1800)
        assert rc == 0, f"fixture judge failed:\n{out[-2000:]}\n{err[-2000:]}"


# ----------------------------------------------------------------------------- main
def main():
    configure(globals())
    root = os.path.abspath(out_dir)
    F = os.path.join(root, "fixtures")
    if summarize:
        files = sorted((f for f in os.listdir(root) if f.startswith("results")),
                       key=lambda f: os.path.getmtime(os.path.join(root, f)))
        rows = {r["name"]: r for f in files for r in map(json.loads, open(os.path.join(root, f)))}
        order = {c.name: i for i, c in enumerate(all_cases())}
        return summary(sorted(rows.values(), key=lambda r: order.get(r["name"], len(order))))
    t0 = time.time()
    fixtures(F)
    print(f"fixtures ready in {F} ({time.time() - t0:.0f} s)", flush=True)
    cases = [c for c in all_cases() if (not only or c.category == only) and any(m in c.name for m in match.split(","))]
    tag = "".join("_" + re.sub(r"[^\w.=-]", "_", t) for t in (only, match) if t)
    results, path = [], os.path.join(root, f"results{tag}.jsonl")  # (a rerun of part: its own file)
    for i, c in enumerate(cases):
        D = os.path.join(root, "cases", re.sub(r"[^\w.=-]", "_", c.name), "out")
        shutil.rmtree(os.path.dirname(D), ignore_errors=True)
        os.makedirs(os.path.dirname(D))
        if c.setup:
            SETUPS[c.setup](F, D, c.script)
        t = time.time()
        rc, out, err = run(command(c.script, c.args, F, D), timeout)
        ok = True
        if rc == 0 and c.check:
            try:
                ok = bool(CHECKS[c.check](D, out + err))
            except Exception as e:  # a missing / unreadable output is a failed check
                ok, err = False, err + f"\ncheck {c.check}: {type(e).__name__}: {e}"
        fill = lambda n: tuple(map(fill, n)) if isinstance(n, tuple) else n.replace("{F}", F).replace("{D}", D)
        names = [fill(n) for n in c.names or ()]
        cls = classify(c.expect, names, rc, out, err, ok)
        lines = [l for l in err.splitlines() if l.strip()]
        first = next((l for l in lines if l.startswith("error:")), lines[-1] if lines else "")
        row = dict(name=c.name, category=c.category, expect=c.expect, cls=cls, rc=rc, check=c.check and ok,
                   line=first.replace(root, "<out>")[:300], seconds=round(time.time() - t, 1),
                   stderr=err[-1500:].replace(root, "<out>"))
        results.append(row)
        print(f"[{i + 1}/{len(cases)}] {cls:10s} rc={rc} {c.name}  {row['line'][:110]}", flush=True)
        with open(path + ".tmp", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in results)
        os.replace(path + ".tmp", path)
    summary(results)
    print(f"wrote {path} ({time.time() - t0:.0f} s)")


def summary(results):
    cats = list(dict.fromkeys(r["category"] for r in results))
    print(f"\n{'category':12s} {'cases':>5s} " + " ".join(f"{k:>10s}" for k in CLASSES))
    for cat in cats + ["total"]:
        rs = [r for r in results if cat in ("total", r["category"])]
        print(f"{cat:12s} {len(rs):5d} " + " ".join(f"{sum(r['cls'] == k for r in rs):10d}" for k in CLASSES))
    for k in ("traceback", "silent", "misleading"):
        for r in results:
            if r["cls"] == k:
                print(f"  {k:10s} {r['category']:9s} {r['name']}: {r['line'][:120]}")
    for r in results:
        if r["expect"] == "run" and r["cls"] == "refused":
            print(f"  refused, expected a run: {r['name']}: {r['line'][:120]}")


if __name__ == "__main__":
    main()
