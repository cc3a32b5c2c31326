"""configurator.py: --key=value overrides, type checks, config files, --help."""
import json

import pytest

from configurator import UserError, configure
from conftest import run


def defaults():
    return {"__file__": "x.py", "lr": 1e-3, "max_iters": 10, "compile": False, "out_dir": "out", "top_k": None}


def test_overrides_and_types():
    g = defaults()
    cfg = configure(g, ["--lr=3e-4", "--max_iters=20", "--compile=true", "--out_dir=o2", "--top_k=5"])
    assert cfg == {"lr": 3e-4, "max_iters": 20, "compile": True, "out_dir": "o2", "top_k": 5}
    assert g["lr"] == 3e-4  # the script's globals are updated in place
    assert configure(defaults(), ["--lr=1"])["lr"] == 1.0  # an int literal is fine for a float


@pytest.mark.parametrize("arg, msg", [
    ("--max_iters=abc", "expected int"),
    ("--max_iters=2.5", "expected int"),
    ("--compile=maybe", "expected True or False"),
    ("--nope=1", "unknown config key 'nope'"),
    ("--lr", "write options as --key=value"),
])
def test_bad_arguments_exit_with_a_message(arg, msg):
    with pytest.raises(UserError) as e:
        configure(defaults(), [arg])
    assert msg in str(e.value)
    if "unknown" in msg:
        assert "Valid keys: lr, max_iters, compile, out_dir, top_k" in str(e.value)


def test_config_files(tmp_path):
    py = tmp_path / "c.py"
    py.write_text("lr = 0.5\nmax_iters = 7\n")
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"out_dir": "j"}))
    cfg = configure(defaults(), [str(py), str(js), "--max_iters=8"])  # later arguments win
    assert (cfg["lr"], cfg["max_iters"], cfg["out_dir"]) == (0.5, 8, "j")
    py.write_text("max_iters = 'many'\n")
    with pytest.raises(UserError, match="expected int"):
        configure(defaults(), [str(py)])
    with pytest.raises(UserError, match="No such file"):
        configure(defaults(), [str(tmp_path / "missing.py")])


def test_help_lists_every_key_with_its_meaning(tmp_path):
    out = run("sft.py", "--help").stdout
    assert "--max_iters=800" in out and "optimizer steps" in out
    for key in ("out_dir", "init_from", "device", "dtype", "seed", "compile"):
        assert f"--{key}=" in out
    p = run("sft.py", "--max_itres=5", f"--out_dir={tmp_path}/o", ok=False)
    assert p.returncode == 2 and p.stderr.startswith("error: unknown config key 'max_itres'")
    assert "did you mean --max_iters?" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_choices_are_enforced_and_listed(tmp_path):
    """A key given allowed values takes only those: its default, a --key=value among them, or a config
    file's; anything else is one line naming the key, the closest choice and every choice."""
    g = {**defaults(), "loss_type": "sigmoid"}
    choices = dict(loss_type=("sigmoid", "ipo", "hinge"))
    assert configure(dict(g), ["--loss_type=ipo"], choices=choices)["loss_type"] == "ipo"
    assert configure(dict(g), [], choices=choices)["loss_type"] == "sigmoid"
    with pytest.raises(UserError) as e:
        configure(dict(g), ["--loss_type=hinj"], choices=choices)
    assert str(e.value) == "--loss_type='hinj' is not a choice. did you mean hinge? Use one of: sigmoid, ipo, hinge"
    p = run("dpo.py", "--loss_type=kto2", f"--out_dir={tmp_path}/o", ok=False)
    assert p.returncode == 2 and p.stderr.startswith("error: --loss_type='kto2' is not a choice")
    assert "sigmoid, ipo, hinge, robust, simpo, kto" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    out = run("dpo.py", "--help").stdout
    assert "(one of: sigmoid, ipo, hinge, robust, simpo, kto)" in out


def test_depends_resolves_the_other_keys_own_default(tmp_path, capsys):
    """grpo.py's clip band depends on --objective: unset, it is the objective's own (GSPO's paper band),
    resolved once here, printed, and returned (so the checkpoint records what ran); a value the user gave, on
    the command line or in a config file, wins; an objective with no own value keeps the declared default."""
    g = {**defaults(), "objective": "ppo", "clip_low": 0.2, "clip_high": 0.2}
    dep = dict(clip_low=("objective", {"gspo": 3e-4, "cispo": 1.0}), clip_high=("objective", {"gspo": 4e-4}))
    cfg = configure(dict(g), ["--objective=gspo"], depends=dep)
    assert (cfg["clip_low"], cfg["clip_high"]) == (3e-4, 4e-4)
    assert capsys.readouterr().out == ("config: objective=gspo sets clip_low=0.0003, clip_high=0.0004 (its own "
                                       "defaults; set a key to override)\n")
    cfg = configure(dict(g), ["--objective=gspo", "--clip_high=0.2"], depends=dep)
    assert (cfg["clip_low"], cfg["clip_high"]) == (3e-4, 0.2)
    (tmp_path / "c.json").write_text(json.dumps({"clip_low": 0.1}))
    cfg = configure(dict(g), [str(tmp_path / "c.json"), "--objective=cispo"], depends=dep)
    assert (cfg["clip_low"], cfg["clip_high"]) == (0.1, 0.2)
    capsys.readouterr()
    assert configure(dict(g), [], depends=dep)["clip_low"] == 0.2 and capsys.readouterr().out == ""
    out = run("grpo.py", "--help").stdout
    assert "(objective=gspo: 0.0003, cispo: 1.0)" in out and "(objective=cispo: 'token')" in out


@pytest.mark.parametrize("content, message", [
    (b"lr = 1\n\xff\xfe\n", "the config file is not UTF-8 text (CFG). save it as UTF-8"),
    (b"lr = (1\n", "the config file does not parse ('(' was never closed) (CFG:1)"),
    (b"lr = x\n", "the config file failed (NameError: name 'x' is not defined) (CFG)"),
])
def test_unreadable_config_files_are_one_line(tmp_path, content, message):
    cfg = tmp_path / "c.py"
    cfg.write_bytes(content)
    with pytest.raises(UserError) as e:
        configure(defaults(), [str(cfg)])
    assert str(e.value) == message.replace("CFG", str(cfg))
