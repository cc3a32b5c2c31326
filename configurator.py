"""
configurator.py (goldRLHF): nanoGPT-style configuration. A stage defines its config as globals, each with a
one-line comment, then calls `config = configure(globals(), choices=dict(loss_type=("sigmoid", "ipo")))`:
an optional config file (.py or .json) as the first argument, then `--key=value` overrides, type-checked
against the defaults; unknown keys and values outside `choices` are errors; `--help` lists every key. A key
whose default depends on another key's value (GSPO's clip band) names it in `depends`: the user's value wins,
else the other key's own default, resolved here and printed once. Each numeric key's comment ends with its
range, checked last (config files too): `# pairs per step [> 0]`, `[>= 0, < 0.5]`, `[> 0, divides n_embd]`,
`[>= 0, <= max_new_tokens]` (a bound: a number, a key, or a product `a * b`), or `[any]`. The returned dict
goes into every checkpoint (stages never reassign a key, so it is what ran).
UserError is every script's report of a user's mistake: `configure`'s hook prints one line, `error: <what>
(<file>:<line>). <the fix>`, exit status 2; any other exception is a bug and keeps its traceback.
"""
import ast
import difflib
import json
import math
import operator
import os
import re
import sys
import time


class UserError(ValueError):
    """A mistake the user can fix: `where` names the file and line (or the option), `fix` what to do."""
    def __init__(self, what, where=None, fix=None):
        super().__init__(what + (f" ({where})" if where else "") + (f". {fix}" if fix else ""))


class MissingFile(UserError, FileNotFoundError):
    """A file or checkpoint that is not there (still a FileNotFoundError for callers that catch that)."""


def _excepthook(etype, value, tb):
    if issubclass(etype, UserError):
        sys.stdout.flush()
        if os.environ.get("RANK", "0") != "0":  # torchrun: every rank finds the same mistake; rank 0 prints it and its
            time.sleep(10)  # exit stops this rank (a mistake of this rank alone is printed after the wait)
        # (the process's own stderr: under torchrun, init_process_group's excepthook calls this one with
        # sys.stderr swapped for a buffer it writes out afterwards, and os._exit would lose the line)
        print(f"error: {value}", file=sys.__stderr__ or sys.stderr, flush=True)
        os._exit(2)  # sys.exit would be ignored inside an excepthook
    sys.__excepthook__(etype, value, tb)

SIMPLE = (int, float, bool, str, type(None))


def _parse(key, raw, default):
    """Convert the string `raw` to the type of `default`, or fail with a message naming the key."""
    if isinstance(default, bool):
        if raw.lower() in ("true", "1", "yes"):
            return True
        if raw.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"--{key}: expected True or False, got {raw!r}")
    if isinstance(default, str):
        return raw
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        if default is None:
            return raw  # a None default takes any value; strings need no quotes
        raise ValueError(f"--{key}: expected {type(default).__name__}, got {raw!r}") from None
    return _check(key, value, default)


def _check(key, value, default):
    if default is None or value is None:
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not type(default):
        raise ValueError(f"{key}: expected {type(default).__name__}, got {type(value).__name__} ({value!r})")
    return value


def _comments(path):
    """key -> the comment on its line in the stage script, for --help."""
    out = {}
    try:
        for line in open(path, encoding="utf-8"):
            m = re.match(r"^(\w+)\s*=\s*(.+?)\s*#\s*(.*)$", line)
            if m and m.group(1) not in out:
                out[m.group(1)] = m.group(3)
    except OSError:
        pass
    return out


RANGE = re.compile(r"\[([^\[\]]*)\]\s*$")  # a comment's last [...]
RULE = re.compile(r"(>=|<=|>|<|divides) (.+)")
OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def parse_range(note):
    """A key's comment -> its range, [(op, [factors of the operand])] ([any]: []), or None if it declares none."""
    m = RANGE.search(note)
    if not m or m.group(1).strip() == "any":
        return None if not m else []
    rules = [RULE.fullmatch(r.strip()) for r in m.group(1).split(",")]
    if not all(rules):
        raise ValueError(f"cannot read the range in {note!r}: use e.g. [> 0], [>= 0, <= 1], [divides n_embd]")
    return [(r.group(1), [f.strip() for f in r.group(2).split("*")]) for r in rules]


def _check_range(k, g, rules, where=None):
    """UserError unless g[k] is within `rules` (parse_range's): one line naming the key, its value and the range."""
    shown, ok = [], True
    for op, factors in rules:
        n = math.prod(g[f] if f in g else ast.literal_eval(f) for f in factors)  # a key's value or a number
        named = " * ".join(factors) + (f" (= {n})" if any(f in g for f in factors) else "")
        if op == "divides":
            ok &= g[k] != 0 and n % g[k] == 0
            shown.append(f"a divisor of {named}")
        else:
            ok &= OPS[op](g[k], n)
            shown.append(f"{op} {named}")
    if not ok:
        raise UserError(f"--{k}={g[k]!r}: must be {', '.join(shown)}", where)


def configure(g, argv=None, choices=None, depends=None):
    """Set g's config keys from argv; returns {key: value}. depends: {key: (other key, {other's value: this
    key's default})}, e.g. dict(clip_low=("objective", {"gspo": 3e-4})): the default when the user sets none."""
    sys.excepthook = _excepthook
    choices, depends = choices or {}, depends or {}
    argv = sys.argv[1:] if argv is None else argv
    keys = [k for k, v in g.items() if not k.startswith("_") and isinstance(v, SIMPLE)]
    script = g.get("__file__", "script")
    if "--help" in argv or "-h" in argv:
        doc = (g.get("__doc__") or "").strip().splitlines()
        spec = g.get("__spec__")  # run as `python -m experiments.active`: say so
        run = f"-m {spec.name}" if spec is not None else script.split('/')[-1]
        print(f"usage: python {run} [config.py|config.json] [--key=value ...]\n")
        if doc:
            print(doc[0] + "\n")
        notes = _comments(script)
        width = max(len(k) + len(repr(g[k])) for k in keys) + 4
        for k in keys:
            allowed = f" (one of: {', '.join(map(str, choices[k]))})" if k in choices else ""
            if k in depends:
                other, by = depends[k]
                allowed += f" ({other}=" + ", ".join(f"{o}: {v!r}" for o, v in by.items()) + ")"
            print(f"  --{k}={g[k]!r}".ljust(width + 4) + notes.get(k, "") + allowed)
        sys.exit(0)
    given = {}  # key -> the config file that set it (None: --key=value): a `depends` default never overrides them
    for arg in argv:
        if not arg.startswith("--"):  # a config file
            try:
                text = open(arg, encoding="utf-8").read()
            except OSError as e:
                raise MissingFile(f"config file: {e.strerror}", arg, "give a .py or .json config file, "
                                  "or options as --key=value") from None
            except UnicodeDecodeError:
                raise UserError("the config file is not UTF-8 text", arg, "save it as UTF-8") from None
            if arg.endswith(".json"):
                try:
                    updates = json.loads(text)
                except json.JSONDecodeError as e:
                    raise UserError(f"malformed JSON config ({e.msg})", f"{arg}:{e.lineno}") from None
            else:
                updates = {}
                try:
                    exec(compile(text, arg, "exec"), {}, updates)
                except SyntaxError as e:
                    raise UserError(f"the config file does not parse ({e.msg})", f"{arg}:{e.lineno}") from None
                except Exception as e:  # a .py config is run: any error in it is the file's
                    raise UserError(f"the config file failed ({type(e).__name__}: {e})", arg) from None
            items = [(k, v) for k, v in updates.items() if not k.startswith("_")]
        else:
            if "=" not in arg:
                raise UserError(f"option {arg} has no value", fix="write options as --key=value")
            k, raw = arg[2:].split("=", 1)
            items = [(k, raw)]
        for k, v in items:
            given[k] = None if arg.startswith("--") else arg
            if k not in keys:
                close = difflib.get_close_matches(k, keys, n=1)
                raise UserError(f"unknown config key {k!r}", arg, (f"did you mean --{close[0]}? " if close else "")
                                + f"Valid keys: {', '.join(keys)}")
            try:
                g[k] = _parse(k, v, g[k]) if isinstance(v, str) and arg.startswith("--") else _check(k, v, g[k])
            except UserError:
                raise
            except ValueError as e:
                raise UserError(f"bad value: {e}", arg) from None
    for k, allowed in choices.items():
        if g[k] not in allowed:
            close = difflib.get_close_matches(str(g[k]), [str(a) for a in allowed], n=1)
            raise UserError(f"--{k}={g[k]!r} is not a choice", fix=(f"did you mean {close[0]}? " if close else "")
                            + f"Use one of: {', '.join(map(str, allowed))}")
    resolved = []
    for k, (other, by) in depends.items():
        if k not in given and g[other] in by:
            g[k] = _check(k, by[g[other]], g[k])
            resolved.append(f"{k}={g[k]!r}")
    if resolved and os.environ.get("RANK", "0") == "0":  # (torchrun: printed once, by rank 0)
        others = sorted({f"{o}={g[o]}" for k, (o, _) in depends.items() if f"{k}={g[k]!r}" in resolved})
        print(f"config: {', '.join(others)} sets {', '.join(resolved)} (its own defaults; set a key to override)")
    notes = _comments(script)
    for k in sorted(keys, key=lambda k: k not in given):  # ranges last (they may name other keys); the user's first
        rules = parse_range(notes.get(k, "")) if isinstance(g[k], (int, float)) and not isinstance(g[k], bool) else None
        if rules:
            _check_range(k, g, rules, given.get(k))
    return {k: g[k] for k in keys}
