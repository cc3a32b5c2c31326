"""experiments/compare_refs.py's comparison on hand-made run folders: timing keys, key order and the out
folder's path are no difference; any other value, line or file is, and so is a checkpoint tensor."""
import json
import os

import torch

from experiments import compare_refs


def _runs(tmp_path, before, after, name="r"):
    outs = [str(tmp_path / "before"), str(tmp_path / "after")]
    for out, rows in zip(outs, (before, after)):
        os.makedirs(os.path.join(out, name), exist_ok=True)
        with open(os.path.join(out, name, "metrics.jsonl"), "w") as f:
            f.write("".join(json.dumps(r).replace("OUT", out) + "\n" for r in rows))
    return outs


def test_same_and_different(tmp_path):
    base = [{"time": 1.0, "iter": 0, "gold": 0.125, "iter_s": 3.0}, {"config": {"out_dir": "OUT/r", "lr": 0.001}}]
    other = [{"gold": 0.125, "iter": 0, "time": 2.0, "iter_s": 9.0}, {"config": {"out_dir": "OUT/r", "lr": 0.001}}]
    notes = []
    assert compare_refs.first_difference("r", _runs(tmp_path / "a", base, other), notes) is None
    assert notes and "another order" in notes[0]  # (noted, not a difference)
    changed = [dict(base[0], gold=0.1250001), base[1]]
    assert "gold: 0.125 != 0.1250001" in compare_refs.first_difference("r", _runs(tmp_path / "b", base, changed), [])
    lr = [base[0], {"config": {"out_dir": "OUT/r", "lr": 0.002}}]
    assert "config.lr: 0.001 != 0.002" in compare_refs.first_difference("r", _runs(tmp_path / "c", base, lr), [])
    assert "1 lines != 2" in compare_refs.first_difference("r", _runs(tmp_path / "d", base[:1], base), [])
    missing = [{k: v for k, v in base[0].items() if k != "gold"}, base[1]]
    assert "keys ['gold'] in one only" in compare_refs.first_difference("r", _runs(tmp_path / "e", base, missing), [])


def test_checkpoint_tensors_are_compared(tmp_path):
    rows = [{"iter": 1, "gold": 0.5}]
    outs = _runs(tmp_path, rows, rows)
    for out, w in zip(outs, (1.0, 1.0)):
        torch.save({"model": torch.full((3,), w), "config": {"out_dir": out}}, os.path.join(out, "r", "ckpt.pt"))
    assert compare_refs.first_difference("r", outs, []) is None  # the paths in the pickle are not compared
    torch.save({"model": torch.tensor([1.0, 1.0, 1.0 + 2 ** -20]), "config": {}}, os.path.join(outs[1], "r", "ckpt.pt"))
    assert "1 of 1 tensor storages differ" in compare_refs.first_difference("r", outs, [])
    assert compare_refs.first_difference("r", outs, [], check_ckpt=False) is None
