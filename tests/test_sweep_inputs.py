"""The committed input sweep (experiments/sweep_inputs.py, issue 32): its case list and its classifier only;
the sweep itself runs for ~an hour and is not run here."""
from experiments import sweep_cases, sweep_inputs
from experiments.sweep_cases import SCRIPTS, all_cases, bad_values, numeric_keys
from experiments.sweep_inputs import classify

ISSUE_32 = [  # the cases issue 32 names (its "Why" 1-10 and "What to build" 3-6), by name
    "reward.thumbs_one_per_prompt", "reward.ratings_one_per_prompt", "reward.float_ratings", "reward.thumbs_01",
    "reward.all_thumbs_up", "reward.ties_only_pairwise", "dpo.ties_only", "reward.n_norm=1",
    "reward.mixed_ties_pairwise", "dpo.mixed_ties", "reward.mixed_ties_rao_kupper",
    "sft.data_path:nonutf8", "sft.data_path:dir", "sample.prompt_file:missing", "sft.config_file:nonutf8",
    "grpo.reward_fns_file:missing", "rlaif.principles:nonutf8", "reward.sft_path:nonutf8",
    "example:sft.batch_size=0", "example:sft.eval_interval=0", "example:sample.max_new_tokens=0", "example:sft.n_head=3_n_embd=32", "example:dpo.ipo_beta=0",
    "example:dpo.beta=-0.1", "example:ppo.beta=-0.1", "example:grpo.kl_coef=-0.1", "example:dpo.grad_accum=0", "example:ppo.lam=2", "example:sample.temperature=-1",
    "grpo.user_prompts_gold", "sft.resume_nothing", "reward.resume_nothing", "sft.fresh_over_checkpoint",
    "reward.out_dir_is_sft_folder", "dpo.out_dir_is_sft_folder", "ppo.out_dir_is_sft_folder",
    "sft.kill9_resume_metrics", "sft.resume_changed_n_layer", "sft.resume_changed_n_embd",
    "dpo.ultrafeedback", "reward.ultrafeedback", "sft.trl_conversational_prompt_completion",
    "dpo.kto_unpaired_conversational", "dpo.kto_thumbs_01",
]


def test_every_issue_case_is_in_the_list():
    names = [c.name for c in all_cases()]
    assert len(names) == len(set(names)), "case names must be unique (they name the results' rows)"
    assert not [n for n in ISSUE_32 if n not in names]
    for c in all_cases():
        assert c.expect in ("run", "refuse") and c.category in ("range", "readers", "feedback", "resume",
                                                                  "grpo_user", "formats", "checkpoint", "examples")
        assert c.expect == "run" or c.names, c.name  # a refusal names a key or a path
        assert c.check is None or c.check in sweep_inputs.CHECKS
        assert c.setup is None or c.setup in sweep_inputs.SETUPS
        assert c.script in sweep_inputs.BASE


def test_every_numeric_key_has_a_case_or_a_reason():
    names = {c.name for c in all_cases() if c.category == "range"}
    n = 0
    for script in SCRIPTS:
        for key, default, comment in numeric_keys(script):
            n += 1
            vals = bad_values(key, comment, script)
            stem = script.split("/")[-1][:-3]
            assert isinstance(vals, str) and vals or any(f"{stem}.{key}={v}" in names for v in vals), (script, key)
    assert n > 120  # (every stage's config was read: a parse that found nothing would pass the loop above)
    keys = dict((k, c) for k, _, c in numeric_keys("reward.py"))
    assert bad_values("max_items", keys["max_items"]) == [-1]  # 0 means all: not out of range
    assert bad_values("batch_size", keys["batch_size"]) == [-1, 0]
    assert isinstance(bad_values("seed", ""), str)


def test_classify():
    err1 = "error: --batch_size=0 is out of range: must be > 0 (--batch_size)\n"
    assert classify("refuse", ["batch_size"], 2, "", err1) == "refused"
    assert classify("refuse", ["eval_interval"], 2, "", err1) == "misleading"  # names another key
    assert classify("refuse", ["batch_size"], 2, "", "warning: x\n" + err1) == "misleading"  # two lines
    assert classify("refuse", ["batch_size"], 2, "", "bad batch_size\n") == "misleading"  # not `error:`
    assert classify("refuse", ["batch_size"], 1, "", "Traceback (most recent call last):\n  ...\nValueError\n") \
        == "traceback"
    assert classify("refuse", ["batch_size"], -9, "", "") == "traceback"  # killed: neither 0 nor 2
    assert classify("refuse", ["batch_size"], 1, "", "error: --batch_size=0\n") == "traceback"  # exit 1: not the promise
    assert classify("refuse", ["batch_size"], 0, "done\n", "") == "silent"  # accepted
    assert classify("refuse", ["batch_size"], None, "", "") == "silent"  # still running at the timeout
    assert classify("run", None, 0, "done\n", "", check_ok=True) == "ran"
    assert classify("run", None, 0, "done\n", "", check_ok=False) == "silent"  # a wrong run
    assert classify("run", None, 2, "", "error: no such format (x.jsonl:1)\n") == "refused"
    assert classify("run", None, 0, "Traceback (most recent call last):\n", "") == "traceback"
    path = "/tmp/sweep/fixtures/latin1.jsonl"
    assert classify("refuse", [path], 2, "", f"error: not UTF-8 ({path}:1)\n") == "refused"
    assert classify("refuse", [path], 2, "", "error: not UTF-8 (latin1.jsonl)\n") == "misleading"
    assert sweep_inputs.names_in("error: the checkpoint exists: pass --overwrite=True", ["--overwrite"])
    assert not sweep_inputs.names_in("error: --n_layers_x changed", ["n_layer"])
    both = [("/o/d", "resume")]  # a tuple: every item named (resume with nothing to resume: the folder and why)
    assert sweep_inputs.names_in("error: --init_from=resume: no checkpoint in /o/d", both)
    assert not sweep_inputs.names_in("error: /o/d: no model.safetensors or pytorch_model.bin in it", both)
    assert sweep_cases.ISSUE_CASES  # (the hand-written list exists)


def test_the_unpaired_fixture_has_both_thumbs():
    """dpo.kto_unpaired_conversational's rows come from the tiny policy's thumbs, all down: relabelled by
    gold around their median, KTO gets both labels."""
    rows = [dict(prompt="p", completion="x" * n, label=False) for n in (3, 1, 4, 1, 5, 9, 2, 6)]
    labels = [r["label"] for r in sweep_inputs.thumbs_by_score(rows, lambda p, c: len(c))]
    assert labels == [False, False, False, False, True, True, False, True]
