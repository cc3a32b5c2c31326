"""
compare_refs.py (goldRLHF): the proof that a refactor changed no behaviour. Runs the same tiny matrix of
stage runs (demo.sh's chain at short lengths, then the flags a refactor of the shared modules touches:
reward ensembles and --reward_ensemble, --aspect_weights, the AI judge in rlaif.py / dpo.py / grpo.py,
dpo.py's losses, KTO and --online, GRPO's objectives, advantages and rewards, best-of-N) in two trees, the
same commands, seeds and thread count, and compares what they wrote:

- every metrics.jsonl: the same lines and keys (in any order), every value the same JSON text (floats
  bitwise), timing keys aside (`time` and keys ending in `_s` or `_per_iter`), the paths in the config
  line made relative to each tree's out folder;
- every other *.jsonl a run writes (feedback.py's and rlaif.py's data, which later runs read): same bytes;
- a run that writes no JSONL (sample.py without best-of-N prints its samples): its stdout;
- every ckpt.pt: the bytes of its tensors (weights, optimizer state, RNG states; not data.pkl, which holds
  the paths). Metrics are rounded to 5 decimals and these runs are 2 steps long: a change at float
  rounding level (a sum in float32 instead of float64) can leave every metric the same and still move the
  weights. --skip_ckpt compares the JSONL only (a refactor that changes what a checkpoint holds).

    python experiments/compare_refs.py --before=HEAD                  # HEAD against the working tree
    python experiments/compare_refs.py --before=HEAD --after=HEAD     # determinism: must say all `same`
    python experiments/compare_refs.py --before=main --after=my-branch --only=sft,feedback,ppo --jobs=2

Refs are checked out with `git worktree add --detach` into a temporary folder (removed at the end); --after
may also be a folder (default: the working tree this script is in). --only runs the named runs and the runs
they read. Prints one line per run, `same` or its first difference, then `N same, M differ`; exits 1 if any
run differs or fails, except the runs in ALLOWED (or --allow) whose differences are expected. Runs on CPU,
one thread each (OMP_NUM_THREADS=1), PYTHONHASHSEED=0: both trees on the same torch. A CI test with stored
numbers would break on a newer torch; this compares two trees on whatever torch is installed.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = re.compile(r"^time$|_s$|_per_iter$")  # time, feedback_s, tokens_per_s, ms_per_iter, s_per_iter, ...
# runs whose results depend on the masked_whiten change: reported, not failed (ppo.py also whitens every run's
# advantages with it: if the change moves ppo.py's numbers, pass --allow=ppo,ppo_worst,...)
ALLOWED = {n: "masked_whiten" for n in ("ppo_whiten", "grpo_reinforce", "grpo_reinforce_baseline")}

# ----------------------------------------------------------------------------- the matrix
# (name, script, flags): <o> is this tree's out folder; --out_dir=<o>/name is added; a run that names
# <o>/other runs after `other`.
SFT = "--n_layer=2 --n_head=2 --n_embd=64 --n_demos=2000 --max_iters=300 --eval_interval=300 --log_interval=100 --eval_prompts=16 --n_print=0"
RM = ("--sft_path=<o>/sft/ckpt.pt --data_path=<o>/feedback --max_iters=40 --warmup_iters=5 --eval_interval=40 "
      "--log_interval=20 --n_norm=32 --n_eval=1 --n_print=0")
PPO = "--sft_path=<o>/sft --max_iters=2 --eval_interval=2 --batch_size=16 --n_minibatches=2 --eval_repeats=1 --n_print=0"
DPO = "--sft_path=<o>/sft/ckpt.pt --max_iters=2 --eval_interval=2 --log_interval=1 --batch_size=8 --eval_repeats=1 --n_print=0"
PAIRS, THUMBS = "--data_path=<o>/feedback/pairwise_train.jsonl", "--data_path=<o>/feedback/binary_train.jsonl"
GRPO = ("--sft_path=<o>/sft/ckpt.pt --max_iters=2 --eval_interval=2 --log_interval=1 --prompts_per_batch=4 "
        "--group_size=4 --minibatch_size=8 --eval_repeats=1 --n_print=0")
ENS, ASPECTS = "--reward_path=<o>/reward_ens", "--reward_path=<o>/rm_faithfulness,<o>/rm_recommendation"
MATRIX = [
    ("sft", "sft.py", SFT),
    ("feedback", "feedback.py", "--policy_path=<o>/sft/ckpt.pt --n_rounds=1"),
    ("reward", "reward.py", RM),
    ("reward_ens", "reward.py", RM + " --ensemble=3"),
    ("rm_faithfulness", "reward.py", RM + " --label_kind=aspects --aspect=faithfulness"),
    ("rm_recommendation", "reward.py", RM + " --label_kind=aspects --aspect=recommendation"),
    ("judge_demos", "rlaif.py", "--mode=demos --policy_path=<o>/sft/ckpt.pt --n_pairs=40"),
    ("judge", "sft.py", "--data_path=<o>/judge_demos/judge_demos.jsonl --init_from=<o>/sft/ckpt.pt --compact_vocab=True "
                        "--block_size=160 --max_iters=30 --warmup_iters=5 --eval_interval=30 --log_interval=10 --max_new_tokens=2 --n_print=0"),
    ("rlaif", "rlaif.py", "--judge=<o>/judge --policy_path=<o>/sft/ckpt.pt --n_pairs=40"),
    ("ppo", "ppo.py", PPO + " --reward_path=<o>/reward"),
    ("ppo_worst", "ppo.py", PPO + f" {ENS} --reward_ensemble=worst"),
    ("ppo_uncertainty", "ppo.py", PPO + f" {ENS} --reward_ensemble=uncertainty"),
    ("ppo_aspects", "ppo.py", PPO + f" {ASPECTS} --aspect_weights=faithfulness:1,recommendation:0.5"),
    ("ppo_whiten", "ppo.py", PPO + " --reward_path=<o>/reward --whiten_rewards=True"),
    ("ppo_k3_critic_sft", "ppo.py", PPO + " --reward_path=<o>/reward --kl_estimator=k3 --critic_init=sft"),
    ("dpo", "dpo.py", f"{DPO} {PAIRS}"),
    ("dpo_ipo", "dpo.py", f"{DPO} {PAIRS} --loss_type=ipo"),
    ("dpo_hinge", "dpo.py", f"{DPO} {PAIRS} --loss_type=hinge"),
    ("dpo_robust", "dpo.py", f"{DPO} {PAIRS} --loss_type=robust --label_smoothing=0.1"),
    ("dpo_simpo_rpo", "dpo.py", f"{DPO} {PAIRS} --loss_type=simpo --rpo_alpha=1.0"),
    ("dpo_ref_online", "dpo.py", f"{DPO} {PAIRS} --ref_mode=online"),
    ("kto", "dpo.py", f"{DPO} {THUMBS} --loss_type=kto"),
    ("kto_pairs", "dpo.py", f"{DPO} {PAIRS} --loss_type=kto"),
    ("dpo_online_human", "dpo.py", f"{DPO} {PAIRS} --online=True --labeler=human"),
    ("dpo_online_reward", "dpo.py", f"{DPO} {PAIRS} --online=True --labeler=reward --reward_path=<o>/reward/ckpt.pt"),
    ("dpo_online_ai", "dpo.py", f"{DPO} {PAIRS} --online=True --labeler=ai --judge_path=<o>/judge"),
    ("grpo", "grpo.py", GRPO),
    ("grpo_rm", "grpo.py", GRPO + " --reward_fns=rm --reward_path=<o>/reward/ckpt.pt"),
    ("grpo_rm_worst", "grpo.py", GRPO + f" --reward_fns=rm {ENS} --reward_ensemble=worst"),
    ("grpo_rm_uncertainty", "grpo.py", GRPO + f" --reward_fns=rm {ENS} --reward_ensemble=uncertainty"),
    ("grpo_rm_aspects", "grpo.py", GRPO + f" --reward_fns=rm {ASPECTS} --aspect_weights=2,0.5"),
    ("grpo_judge", "grpo.py", GRPO + " --reward_fns=judge --judge_path=<o>/judge"),
    ("grpo_mixed_rewards", "grpo.py", GRPO + " --reward_fns=gold:1,format:0.5,length:0.1"),
    ("grpo_gspo", "grpo.py", GRPO + " --objective=gspo"),
    ("grpo_cispo", "grpo.py", GRPO + " --objective=cispo --loss_agg=token"),
    ("grpo_drgrpo", "grpo.py", GRPO + " --advantage=drgrpo --loss_agg=fixed"),
    ("grpo_rloo", "grpo.py", GRPO + " --advantage=rloo --kl_estimator=full"),
    ("grpo_batch_centred", "grpo.py", GRPO + " --advantage=batch_centred --kl_in=reward"),
    ("grpo_batch_raw", "grpo.py", GRPO + " --advantage=batch_raw --dynamic_sampling=True --overlong_cache=8"),
    ("grpo_reinforce", "grpo.py", GRPO + " --advantage=reinforce --kl_in=reward"),
    ("grpo_reinforce_baseline", "grpo.py", GRPO + " --advantage=reinforce_baseline"),
    ("sample_bon", "sample.py", "--init_from=<o>/sft --reward_path=<o>/reward --best_of=4 --max_prompts=16"),
    ("sample_bon_ens", "sample.py", f"--init_from=<o>/sft {ENS} --reward_ensemble=uncertainty --best_of=4 --max_prompts=16"),
    ("sample_ppo", "sample.py", "--init_from=<o>/ppo --max_prompts=5"),
]
NAMES = [n for n, _, _ in MATRIX]
DEPS = {n: [d for d in re.findall(r"<o>/(\w+)", flags) if d in NAMES] for n, _, flags in MATRIX}


# ----------------------------------------------------------------------------- running
def run_tree(tree, out, runs, jobs, device):
    """Runs `runs` (names, in MATRIX order) in `tree`, at most `jobs` at once, each after the runs it reads.
    stdout + stderr go to out/name.log. Returns {name: exit status, or 'skipped' when a run it reads failed}."""
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "PYTHONUNBUFFERED": "1",
           "PYTHONDONTWRITEBYTECODE": "1"}
    cache = os.path.join(os.path.dirname(ROOT), "shared", "tiktoken_cache")  # as tests/conftest.py
    if "TIKTOKEN_CACHE_DIR" not in env and os.path.isdir(cache):
        env["TIKTOKEN_CACHE_DIR"] = cache
    env.pop("TRITON_INTERPRET", None)
    spec = {n: (script, flags) for n, script, flags in MATRIX}
    status, running, pending = {}, {}, list(runs)
    while pending or running:
        for n, (p, t0, log) in list(running.items()):
            if p.poll() is not None:
                status[n] = p.returncode
                log.close()
                del running[n]
                print(f"  {os.path.basename(out)}: {n} {'done' if p.returncode == 0 else f'FAILED ({p.returncode})'} "
                      f"in {time.time() - t0:.1f}s", flush=True)
        for n in [n for n in pending if all(d in status for d in DEPS[n])]:
            if any(status[d] != 0 for d in DEPS[n]):
                status[n] = "skipped"
                pending.remove(n)
            elif len(running) < jobs:
                script, flags = spec[n]
                cmd = [sys.executable, script, f"--out_dir={out}/{n}", f"--device={device}",
                       *flags.replace("<o>", out).split()]
                log = open(os.path.join(out, f"{n}.log"), "w")
                running[n] = (subprocess.Popen(cmd, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT),
                              time.time(), log)
                pending.remove(n)
        time.sleep(0.1)
    return status


# ----------------------------------------------------------------------------- comparing
def jsonl_files(d):
    return sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs if f.endswith(".jsonl"))


def value_diff(k, x, y):
    """Two JSON values that differ, shown: a dict (the config line) by its keys that differ."""
    if not (isinstance(x, dict) and isinstance(y, dict)):
        return f"{k}: {json.dumps(x)} != {json.dumps(y)}"
    get = lambda d, s: json.dumps(d.get(s, "(absent)"))
    return "; ".join(f"{k}.{s}: {get(x, s)} != {get(y, s)}" for s in sorted(set(x) | set(y)) if get(x, s) != get(y, s))


def first_difference(name, outs, notes, check_ckpt=True):
    """None if run `name` wrote the same in both out folders, else a line saying where it first differs;
    appends to `notes` what differs but is no difference."""
    a, b = (os.path.join(o, name) for o in outs)
    files = jsonl_files(a)
    if files != jsonl_files(b):
        return f"files: {files} != {jsonl_files(b)}"
    if not files:  # nothing but stdout
        logs = [open(os.path.join(o, f"{name}.log")).read().replace(o, "OUT") for o in outs]
        return None if logs[0] == logs[1] else "stdout differs"
    for f in files:
        texts = [open(os.path.join(d, f)).read() for d in (a, b)]
        if f != "metrics.jsonl":
            if texts[0] != texts[1]:
                lines = [t.splitlines() for t in texts]
                i = next((i for i, (x, y) in enumerate(zip(*lines)) if x != y), min(map(len, lines)))
                return f"{f}: differs from line {i + 1} ({len(lines[0])} and {len(lines[1])} lines)"
            continue
        rows = [[json.loads(line) for line in t.replace(o, "OUT").splitlines()] for t, o in zip(texts, outs)]
        if len(rows[0]) != len(rows[1]):
            return f"{f}: {len(rows[0])} lines != {len(rows[1])}"
        for i, (x, y) in enumerate(zip(*rows)):
            kx, ky = ([k for k in r if not TIMING.search(k)] for r in (x, y))
            if set(kx) != set(ky):
                return f"{f} line {i + 1}: keys {sorted(set(kx) ^ set(ky))} in one only"
            if kx != ky and not notes:  # JSON objects have no order: noted, not a difference
                notes.append(f"keys in another order from {f} line {i + 1}")
            for k in kx:
                if json.dumps(x[k]) != json.dumps(y[k]):
                    return f"{f} line {i + 1} {value_diff(k, x[k], y[k])}"
    if check_ckpt and os.path.exists(os.path.join(a, "ckpt.pt")):  # the tensors' bytes (data.pkl has the paths)
        zips = [zipfile.ZipFile(os.path.join(d, "ckpt.pt")) for d in (a, b)]
        names = [[n for n in z.namelist() if "/data/" in n and "serialization_id" not in n] for z in zips]
        if len(names[0]) != len(names[1]):
            return f"ckpt.pt: {len(names[0])} tensor storages != {len(names[1])}"
        bad = [m for m, n in zip(*names) if zips[0].read(m) != zips[1].read(n)]
        if bad:
            return f"ckpt.pt: {len(bad)} of {len(names[0])} tensor storages differ (first: {bad[0]}; metrics.jsonl identical)"
    return None


def last_line(path):
    lines = [ln for ln in open(path, errors="replace").read().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


def checkout(ref, tmp, label):
    """A folder with `ref`'s files: a directory as it is, else a detached git worktree under tmp."""
    if os.path.isdir(ref):
        return os.path.abspath(ref), False
    path = os.path.join(tmp, label)
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "--quiet", path, ref], check=True)
    return path, True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="git ref (or folder) of the code before")
    ap.add_argument("--after", default=ROOT, help="git ref or folder of the code after (default: this working tree)")
    ap.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "compare"), help="out folders go to OUT/{before,after}")
    ap.add_argument("--only", default="", help="comma list of run names (and the runs they read)")
    ap.add_argument("--allow", default="", help="comma list of runs whose differences are reported but expected")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each")
    ap.add_argument("--device", default="cpu", help="every run's --device (cpu: deterministic)")
    ap.add_argument("--skip_ckpt", action="store_true", help="compare the JSONL files only, not ckpt.pt's tensors")
    args = ap.parse_args()
    only = [n for n in args.only.split(",") if n]
    if set(only) - set(NAMES):
        sys.exit(f"error: --only: no run {', '.join(sorted(set(only) - set(NAMES)))}; the runs: {', '.join(NAMES)}")
    runs = [n for n in NAMES if n in only] if only else NAMES
    while set(d for n in runs for d in DEPS[n]) - set(runs):  # the runs they read, transitively
        runs = [n for n in NAMES if n in runs or any(n in DEPS[m] for m in runs)]
    allowed = {**ALLOWED, **{n: "--allow" for n in args.allow.split(",") if n}}
    tmp = tempfile.mkdtemp(prefix="compare_refs_")
    trees, status, outs = [], {}, [os.path.join(os.path.abspath(args.out), s) for s in ("before", "after")]
    try:
        for label, ref, out in zip(("before", "after"), (args.before, args.after), outs):
            tree, is_worktree = checkout(ref, tmp, label)
            trees.append((tree, is_worktree))
            t0 = time.time()
            print(f"{label}: {ref} in {tree}, {len(runs)} runs, out {out}", flush=True)
            status[label] = run_tree(tree, out, runs, args.jobs, args.device)
            print(f"{label}: {time.time() - t0:.0f}s wall", flush=True)
    finally:
        for tree, is_worktree in trees:
            if is_worktree:
                subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", tree], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    n_same = n_bad = 0
    for n in runs:
        notes = []
        st = [status[s][n] for s in ("before", "after")]
        failed = [f"{o}/{n}.log: {last_line(os.path.join(o, f'{n}.log'))}" for o, r in zip(outs, st) if r not in (0, "skipped")]
        diff = first_difference(n, outs, notes, not args.skip_ckpt) if st == [0, 0] else \
            f"did not finish (before {st[0]}, after {st[1]}) {' '.join(failed) or '(a run it reads failed)'}"
        ok = diff is None or (n in allowed and st == [0, 0])  # a run that fails is never allowed
        n_same, n_bad = n_same + (diff is None), n_bad + (not ok)
        print(f"{n:24s} " + ("same" + "".join(f" ({t})" for t in notes) if diff is None else f"differs (allowed: {allowed[n]}): {diff}" if ok
                             else f"DIFFERS: {diff}"))
    print(f"{n_same} same, {len(runs) - n_same} differ ({len(runs) - n_same - n_bad} of them allowed)")
    sys.exit(1 if n_bad else 0)


if __name__ == "__main__":
    main()
