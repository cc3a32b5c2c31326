"""Shared test helpers: run a stage script as a user would, read its metrics, and session-wide
fixtures that train the small models the stage tests start from (once per test run)."""
import fcntl
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_cache = os.path.join(os.path.dirname(ROOT), "shared", "tiktoken_cache")
if "TIKTOKEN_CACHE_DIR" not in os.environ and os.path.isdir(_cache):
    os.environ["TIKTOKEN_CACHE_DIR"] = _cache
sys.path.insert(0, ROOT)


WRITERS = ("sft.py", "feedback.py", "reward.py", "ppo.py", "dpo.py", "grpo.py", "rlaif.py", "sample.py", "plot.py",
           "experiments.active", "experiments.frontier", "experiments.sweep_inputs")  # the scripts with an out_dir


def run(script, *args, ok=True, timeout=900, torchrun=0):
    """Run `python script --args...` (or under torchrun with `torchrun` processes) from the repo root;
    run("-m", "experiments.overopt", ...) runs a module, as `python -m experiments.overopt ...`.
    Returns the CompletedProcess; with ok=True a non-zero exit fails the test and shows the output.
    A script with an out_dir must be given one (under tmp_path): its default, out/..., may hold a
    developer's own runs, which would change what the test sees."""
    if (args[0] if script == "-m" else script) in WRITERS and "--help" not in args and \
            not any(str(a).startswith("--out_dir=") for a in args):
        pytest.fail(f"run({script!r}, ...) without --out_dir: give it one under tmp_path")
    cmd = [sys.executable, script, *args]
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}",
               script, *args]
    # one thread per process unless asked: the test models are tiny (a second OpenMP thread costs more than
    # it gives), and under torchrun two processes x two threads on two cores spin-wait
    threads = "1" if torchrun else os.environ.get("OMP_NUM_THREADS", "1")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": threads}
    env.pop("TRITON_INTERPRET", None)  # stage scripts on CPU use the PyTorch reference path
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if ok and p.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {p.returncode}\n--- stdout\n{p.stdout[-4000:]}\n--- stderr\n{p.stderr[-4000:]}")
    return p


def read_metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def assert_same_weights(dir_a, dir_b):
    """The model weights of two checkpoints (out_dirs) agree to float rounding. Not a plain max: weights
    whose true gradient is zero (attention key biases: softmax ignores a constant added to every score;
    a reward head's bias under pairwise losses) get gradients of pure rounding noise, which Adam scales
    up to ~lr/10 per step. So: under 0.1% of the weights may differ by more than 1e-6, none by 1e-3.
    (Two runs on different batches differ in ~99% of weights, by up to ~0.07.)"""
    import torch
    a, b = (torch.load(os.path.join(d, "ckpt.pt"), weights_only=True)["model"] for d in (dir_a, dir_b))
    assert a.keys() == b.keys()
    d = torch.cat([(a[k].float() - b[k].float()).abs().flatten() for k in a])
    frac = (d > 1e-6).float().mean().item()
    print(f"weights: max |diff| {d.max().item():.2e}, fraction > 1e-6: {frac:.2e}")
    assert frac < 1e-3 and d.max().item() < 1e-3, (frac, d.max().item())


def bf16_rollout(sft_dir, tmp_path, temperature=0.7):
    """What the RL stages' first-ratio tests start from: the SFT policy loaded from a copy of its checkpoint
    that asks for dropout 0.3 (a model trained with dropout), dropout disabled as ppo.py / grpo.py do, a
    reference (another copy of the SFT model), and a bf16 rollout of 16 train prompts. Returns a namespace:
    policy, ref, tokens, attn, mask, P, labels, bf16 (the autocast context)."""
    import torch
    from types import SimpleNamespace
    import common
    import data
    import task
    from model import disable_dropout
    torch.manual_seed(0)
    ck = torch.load(os.path.join(sft_dir, "ckpt.pt"), weights_only=True)
    ck["model_args"] = {**ck["model_args"], "dropout": 0.3}
    common.save_checkpoint(str(tmp_path / "sft_dropout.pt"), ck)
    policy, vocab, _ = common.load_model(str(tmp_path / "sft_dropout.pt"))
    disable_dropout(policy)
    ref = common.load_model(sft_dir)[0].eval()
    tok = data.Tokenizer(vocab)
    ids = data.encode_prompts(tok, task.prompts("train")[:16], 24)
    bf16 = torch.autocast("cpu", dtype=torch.bfloat16)
    with torch.no_grad(), bf16:
        out = policy.eval().generate(ids, 20, tok.eot, temperature=temperature)
    tokens, mask, P = out["tokens"], out["response_mask"], out["prompt_len"]
    return SimpleNamespace(policy=policy, ref=ref, tokens=tokens, attn=out["attention_mask"], mask=mask, P=P,
                           labels=tokens[:, P:].masked_fill(~mask, -100), bf16=bf16)


def first_rows(reward_dir, name, n):
    """The first n rows of the fixture's feedback/{name}.jsonl, as feedback/{name}_{n}.jsonl beside it
    (written once, atomically): the tests that need a small file of the fixture's feedback read these."""
    path = os.path.join(reward_dir, "feedback", f"{name}_{n}.jsonl")
    if not os.path.exists(path):
        with open(os.path.join(reward_dir, "feedback", f"{name}.jsonl")) as f:
            lines = f.readlines()[:n]
        with open(path + ".tmp", "w") as f:
            f.writelines(lines)
        os.replace(path + ".tmp", path)
    return path


def small_test_pairs(reward_dir, n=150):
    """The first n of the fixture's held-out pairs (pairwise_test.jsonl has about 600): the tests that only
    need eval metrics to exist score these, not all of them (CI time)."""
    return first_rows(reward_dir, "pairwise_test", n)


def last_eval(out_dir, key="gold"):
    """The last metrics line that has `key` (eval lines carry gold, train lines carry loss)."""
    return [m for m in read_metrics(out_dir) if key in m][-1]


# The test files that take minutes, longest first: pytest-xdist hands out whole files (--dist loadfile), and one
# of these started near the end of the run would keep one worker busy long after the other ran out of work.
SLOW_FIRST = ("test_rlaif.py", "test_chain.py", "test_active.py", "test_ppo.py")


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # xdist's own order (most tests first) would undo the one below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
    """SLOW_FIRST's files first, then every other file by its number of tests, most first (xdist's default)."""
    count = {}
    for item in items:
        count[item.path] = count.get(item.path, 0) + 1
    slow = lambda item: SLOW_FIRST.index(item.path.name) if item.path.name in SLOW_FIRST else len(SLOW_FIRST)
    items.sort(key=lambda item: (slow(item), -count[item.path]))  # stable: a file's tests keep their order


def built_once(tmp_path_factory, name, build):
    """A session fixture's folder, built once per test run even under pytest-xdist: the workers share the run's
    folder, and the first to take the lock builds while the others wait (xdist's documented recipe), instead of
    each worker training its own copy. A build that failed is redone."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # .../pytest-N/popen-gwK -> .../pytest-N, this run's, shared by its workers
    out = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "built").exists():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            build(str(out))
            (out / "built").touch()
    return str(out)


@pytest.fixture(scope="session")
def sft_dir(tmp_path_factory):
    """A small SFT model on the built-in task (1200 steps at lr 1e-3, the demo's until 2026-12-07: about 2 minutes on
    a core; the RL learning tests are sized for it): the start of every RL stage."""
    return built_once(tmp_path_factory, "sft_fixture", lambda out: run(
        "sft.py", f"--out_dir={out}", "--max_iters=1200", "--lr=1e-3", "--eval_interval=1200", "--log_interval=100",
        "--eval_prompts=50"))


@pytest.fixture(scope="session")
def reward_dir(sft_dir, tmp_path_factory):
    """A small pairwise Bradley-Terry reward model on the built-in task, trained from sft_dir on simulated
    feedback: feedback/ (feedback.py: {pairwise,ties,rankings,likert,binary}_{train,test}.jsonl and its
    report) and ckpt.pt (scalar head, reward_gain / reward_bias). The start of ppo.py, the data of dpo.py."""
    ckpt = os.path.join(sft_dir, "ckpt.pt")
    # feedback.py's defaults (the biased default pool, 4 rounds: 5,994 train pairs) and 300 steps (the demo: 200):
    # on task v2, acc_gold 0.71, Spearman 0.48 with gold on policy samples, probe/length 0.57, probe/positivity
    # 0.02 (2026-12-07): a weak, positivity-biased reward model, which the RL learning tests are sized for.

    def build(out):
        run("feedback.py", f"--out_dir={out}/feedback", f"--policy_path={ckpt}")
        run("reward.py", f"--out_dir={out}", f"--sft_path={ckpt}", f"--data_path={out}/feedback", "--max_iters=300",
            "--eval_interval=1000", "--log_interval=20", "--n_norm=64", "--n_eval=1")
    return built_once(tmp_path_factory, "reward_fixture", build)
