"""
experiments/table.py: the experiments' one mean +- standard error (and standard deviation), the few
readers of metrics.jsonl files they need, and a markdown table of runs: a module for the experiments'
Python and a command for the shell runners.

    from experiments.table import mean_se, cell, last, evals, by_iter, markdown
    python -m experiments.table --keys=gold,kl --row "beta 0.1" "out/runs/beta0.1_s*" --row "beta 1" "out/runs/beta1_s*"

The command prints one row per --row LABEL GLOB: for each key, the mean over the runs (the folders or
metrics.jsonl files GLOB matches, usually one per seed) of the key in each run's last row that has the
first key (--last=KEY: that key; --split=test: only rows of that split), +- the standard error
(--spread=sd: the sample standard deviation), then the number of runs that have such a row. A LABEL
may hold several cells ("20% | majority"): --head names them (default: run); --names names the keys'
columns (default: the keys). --done reads only the runs whose folder has a `done` file (the runners'
mark of a finished run).
"""
import argparse
import glob
import json
import math
import os
import statistics
import sys

from configurator import UserError


def mean_sd(xs):
    """(mean, sample standard deviation) of the numbers xs; the deviation of one number is 0."""
    xs = list(xs)
    return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def mean_se(xs):
    """(mean, standard error = sample standard deviation / sqrt(n)) of the numbers xs; 0 for one number."""
    xs = list(xs)
    m, sd = mean_sd(xs)
    return m, sd / math.sqrt(len(xs))


def cell(xs, spec=".2f", spread="se"):
    """A table cell: 'mean ± spread' of xs in the format spec, 'mean' for one value, '-' for none; None
    and NaN (a run that did not log the number) are left out. spread: 'se' or 'sd'."""
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return "-"
    m, s = (mean_se if spread == "se" else mean_sd)(xs)
    return f"{m:{spec}}" + (f" ± {s:{spec}}" if len(xs) > 1 else "")


def read_rows(path):
    """Every row (dict) of a metrics.jsonl, or of the one in a run folder; [] if there is none. A file that
    cannot be read, is not UTF-8 or has a line that is not JSON: one line naming it (and the line)."""
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except OSError as e:
        raise UserError(f"cannot read the metrics file ({e.strerror})", path) from None
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            rows += [json.loads(line.decode("utf-8"))] if line.strip() else []
        except UnicodeDecodeError:
            raise UserError("the metrics file is not UTF-8 text", f"{path}:{n}", "the stages write UTF-8 "
                            "JSON lines") from None
        except json.JSONDecodeError as e:
            raise UserError(f"malformed JSON ({e.msg} at column {e.colno})", f"{path}:{n}") from None
    return rows


def last(path, key, split=None):
    """A run's last row that has `key` (eval rows carry gold, train rows a loss), of the given split if one
    is given; None if it has none."""
    rows = [r for r in read_rows(path) if key in r and (split is None or r.get("split") == split)]
    return rows[-1] if rows else None


def evals(path):
    """A stage's held-out evaluations, in order: the rows that carry gold (PPO's: split 'test'; best-of-N: one row
    per N, logged together at the end)."""
    return [r for r in read_rows(path) if "gold" in r and r.get("split", "test") == "test"]


def by_iter(path, split=None):
    """{iteration: row} of a run's rows of the given split (e.g. PPO's held-out evals: split='test')."""
    return {r["iter"]: r for r in read_rows(path) if "iter" in r and (split is None or r.get("split") == split)}


def markdown(head, rows):
    """A markdown table: the header cells, then one line per row (any values, printed with str)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(str(x) for x in r) + " |" for r in rows])


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m experiments.table",
                                 description="A markdown table of runs' last logged numbers (see the docstring).")
    ap.add_argument("--keys", required=True, help="comma-separated metrics, one column each")
    ap.add_argument("--row", nargs=2, action="append", required=True, metavar=("LABEL", "GLOB"),
                    help="a row: its label cells and the runs (folders or metrics.jsonl files) it averages")
    ap.add_argument("--head", default="run", help="the label cells' header, cells separated by | (default: run)")
    ap.add_argument("--names", default="", help="the keys' header, cells separated by | (default: the keys)")
    ap.add_argument("--last", default="", help="read each run's last row that has this key (default: the first key)")
    ap.add_argument("--split", default=None, help="read only rows of this split (PPO's held-out evals: test)")
    ap.add_argument("--spread", default="se", choices=("se", "sd"), help="standard error (default) or deviation")
    ap.add_argument("--spec", default=".2f", help="the numbers' format (default .2f)")
    ap.add_argument("--done", action="store_true", help="only runs whose folder has a `done` file")
    args = ap.parse_args(argv)
    keys = args.keys.split(",")
    rows = []
    for label, pattern in args.row:
        runs = [p for p in sorted(glob.glob(pattern)) if not args.done or os.path.exists(os.path.join(p, "done"))]
        try:
            finals = [r for r in (last(p, args.last or keys[0], args.split) for p in runs) if r is not None]
        except UserError as e:  # a user's file: one line, exit 2 (as every script: configurator.py)
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        rows.append([label] + [cell([r.get(k) for r in finals], args.spec, args.spread) for k in keys] + [len(finals)])
    cells = lambda text: [c.strip() for c in text.split("|")]
    print(markdown(cells(args.head) + (cells(args.names) if args.names else keys) + ["seeds"], rows))


if __name__ == "__main__":
    main()
