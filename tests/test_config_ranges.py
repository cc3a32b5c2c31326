"""Every numeric config key of every script declares its range at the end of its comment ([> 0], [>= 0, <= 1],
[> 0, divides n_embd], [any]) and configure() refuses a value just outside it, from the command line or a config
file, with one line naming the key, the value and the range. In-process: each script is imported (its stage
runs only under __main__) and its globals configured; one torchrun run checks the line is printed once."""
import glob
import importlib
import json
import math
import os
import re

import pytest

from configurator import SIMPLE, UserError, _comments, configure, parse_range
from conftest import ROOT, run

SCRIPTS = ("sft", "feedback", "rlaif", "reward", "ppo", "dpo", "grpo", "sample", "audit", "experiments.active",
           "experiments.overopt", "experiments.sweep_inputs")


def config_of(name):
    """The script's config as configure() sees it: its simple globals, and __file__ (where the comments are)."""
    g = vars(importlib.import_module(name))
    return {k: v for k, v in g.items() if k == "__file__" or (not k.startswith("_") and isinstance(v, SIMPLE))}


def numeric(g):
    return [k for k, v in g.items() if not k.startswith("_") and isinstance(v, (int, float)) and not isinstance(v, bool)]


def outside(g, k, op, factors):
    """A value of g[k]'s type just outside one rule of its range."""
    n = math.prod(g[f] if f in g else float(f) for f in factors)
    step = 1 if isinstance(g[k], int) else 0.5
    bad = {">": n, ">=": n - step, "<": n, "<=": n + step, "divides": n + 1}[op]  # n + 1 never divides n >= 1
    return type(g[k])(bad)


CASES = [(s, k) for s in SCRIPTS for k in numeric(config_of(s))]


def test_every_script_that_configures_is_walked():
    found = set()
    for path in glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True):
        rel = os.path.relpath(path, ROOT)
        if not rel.startswith(("tests", "bench")) and re.search(r"^\s+(config = )?configure\(globals\(\)", open(path).read(), re.M):
            found.add(rel[:-3].replace(os.sep, "."))
    assert found == set(SCRIPTS)


@pytest.mark.parametrize("script, key", CASES)
def test_each_numeric_key_refuses_a_value_just_outside_its_range(script, key, tmp_path):
    g = config_of(script)
    rules = parse_range(_comments(g["__file__"]).get(key, ""))
    assert rules is not None, f"{script}.py: the numeric key {key} declares no range, e.g. [> 0] (or [any])"
    assert configure(dict(g), [])[key] == g[key]  # the default is within it
    for op, factors in rules:
        bad = outside(g, key, op, factors)
        with pytest.raises(UserError) as e:
            configure(dict(g), [f"--{key}={bad!r}"])
        msg = str(e.value)
        assert msg.startswith(f"--{key}={bad!r}: must be ") and "\n" not in msg, msg
        assert (f"{op} {' * '.join(factors)}" if op != "divides" else f"a divisor of {' * '.join(factors)}") in msg
        js = tmp_path / "c.json"  # a config file's value: refused too, the file named
        js.write_text(json.dumps({key: bad}))
        with pytest.raises(UserError, match=re.escape(f"--{key}={bad!r}: must be ") + ".*" + re.escape(f"({js})")):
            configure(dict(g), [str(js)])


def test_ranges_name_other_keys_both_ways():
    """n_head divides n_embd: a --n_head that does not, or an --n_embd that the default n_head does not divide;
    grpo's minibatch_size divides prompts_per_batch * group_size, whichever of the three the user moves."""
    g = config_of("sft")
    with pytest.raises(UserError, match=r"^--n_head=3: must be > 0, a divisor of n_embd \(= 128\)$"):
        configure(dict(g), ["--n_head=3"])
    with pytest.raises(UserError, match=r"^--n_head=4: must be > 0, a divisor of n_embd \(= 130\)$"):
        configure(dict(g), ["--n_embd=130"])
    assert configure(dict(g), ["--n_embd=130", "--n_head=2"])["n_head"] == 2
    g = config_of("grpo")
    for arg, mb, n in (("--minibatch_size=48", 48, 128), ("--group_size=6", 64, 96), ("--prompts_per_batch=3", 64, 24)):
        with pytest.raises(UserError) as e:
            configure(dict(g), [arg])
        assert str(e.value) == f"--minibatch_size={mb}: must be > 0, a divisor of prompts_per_batch * group_size (= {n})"
    assert configure(dict(g), ["--group_size=4"])["group_size"] == 4  # 64 responses, minibatch 64
    with pytest.raises(UserError, match=r"^--n_annotators=6: must be > 0, <= n_labelers \(= 5\)$"):
        configure(config_of("feedback"), ["--n_annotators=6"])
    with pytest.raises(UserError, match=r"^--n_annotators=3: must be > 0, <= n_labelers \(= 2\)$"):
        configure(config_of("feedback"), ["--n_labelers=2"])
    assert configure(config_of("ppo"), ["--unended_score=-1e9"])["unended_score"] == -1e9  # [any]


def test_help_shows_the_range(capsys):
    with pytest.raises(SystemExit):
        configure(config_of("sft"), ["--help"])
    line = next(s for s in capsys.readouterr().out.splitlines() if "--n_head=" in s)
    assert line.rstrip().endswith("attention heads [> 0, divides n_embd]")


@pytest.mark.parametrize("args, line", [
    (["--batch_size=0"], "error: --batch_size=0: must be > 0"),  # configure(): before the process group
    (["--data_path={tmp}/none.jsonl"], "error: no such file ({tmp}/none.jsonl). check the path (--data_path / "
     "--test_path / --val_path)"),  # after init_process_group, whose excepthook buffers stderr (configurator.py)
])
def test_under_torchrun_the_line_is_printed_once(tmp_path, args, line):
    """Every rank finds the mistake; rank 0 alone prints it and exits 2. torchrun itself always exits 1 when a
    process fails (and prints its own ChildFailedError report, naming rank 0's exit code 2): nothing a stage
    can change, so the status 2 is rank 0's."""
    p = run("sft.py", *[a.format(tmp=tmp_path) for a in args], f"--out_dir={tmp_path}/o", ok=False, torchrun=2)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [line.format(tmp=tmp_path)], p.stderr
    assert p.returncode != 0 and re.search(r"rank\s*: 0 .*\n\s*exitcode\s*: 2 ", p.stderr), p.stderr
