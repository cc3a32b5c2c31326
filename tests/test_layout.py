"""The layout readers rely on: no program imports a pipeline stage (no sys.path or importlib detour either),
the shared modules import no cycle, and the files stay the size of something read in an afternoon.
Every .py file of the repository is parsed, experiments/ included; tests/ and bench/ aside (they exercise
the stages' own functions)."""
import ast
import glob
import io
import os
import tokenize

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("sft", "feedback", "reward", "ppo", "dpo", "grpo", "rlaif", "sample")


def sources():
    """{module name: path} of every .py file but tests/ and bench/ (experiments/active.py: experiments.active)."""
    out = {}
    for path in glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True):
        rel = os.path.relpath(path, ROOT)
        if rel.split(os.sep)[0] in ("tests", "bench") or "/." in "/" + rel:
            continue
        name = rel[:-3].replace(os.sep, ".").removesuffix(".__init__")
        out[name] = path
    return out


def problems(name, source, known):
    """(imports of known modules, complaints) of one file's source: an import of a pipeline stage, a
    sys.path edit, or an importlib / __import__ call naming a stage."""
    imports, bad = set(), []
    package = name.rsplit(".", 1)[0] if "." in name else ""
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import within a package
                base = ".".join(filter(None, [package, base]))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
            bad.append(f"line {node.lineno}: sys.path is edited or read")
        elif isinstance(node, ast.Call):
            fn = ast.unparse(node.func)
            if fn.endswith(("import_module", "__import__", "spec_from_file_location", "run_path", "import_file")):
                consts = [a.value for a in ast.walk(node) if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                if any(c.removesuffix(".py").split("/")[-1] in STAGES for c in consts):
                    bad.append(f"line {node.lineno}: {fn} loads a pipeline stage")
        for n in names:
            if n in STAGES:
                bad.append(f"line {node.lineno}: imports the pipeline stage {n}")
            if n in known and n != name:
                imports.add(n)
            elif n.split(".")[0] in known and n.split(".")[0] != name:
                imports.add(n.split(".")[0])
    return imports, bad


def test_no_program_imports_a_stage_and_no_cycle():
    files = sources()
    assert {"sft", "feedback", "reward", "ppo", "dpo", "grpo", "rlaif", "sample", "labelers", "rewards"} <= set(files)
    graph, complaints = {}, []
    for name, path in files.items():
        graph[name], bad = problems(name, open(path).read(), files)
        complaints += [f"{os.path.relpath(path, ROOT)} {b}" for b in bad]
    assert not complaints, "\n".join(complaints)
    seen, stack = set(), []

    def visit(n):  # depth-first: a module met again while still on the stack closes a cycle
        if n in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
        if n in seen:
            return
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            visit(m)
        stack.pop()
        seen.add(n)
    for n in sorted(graph):
        visit(n)


@pytest.mark.parametrize("source, complaint", [
    ("import reward\n", "imports the pipeline stage reward"),
    ("from dpo import dpo_loss\n", "imports the pipeline stage dpo"),
    ("import sys\nsys.path.insert(0, '..')\n", "sys.path"),
    ("import importlib\nm = importlib.import_module('grpo')\n", "loads a pipeline stage"),
    ("import importlib.util\ns = importlib.util.spec_from_file_location('x', 'feedback.py')\n", "loads a pipeline stage"),
])
def test_the_checker_sees_each_detour(source, complaint):
    _, bad = problems("experiments.mine", source, sources())
    assert any(complaint in b for b in bad), bad
    assert problems("labelers", "import data\nfrom configurator import UserError\n", sources()) == ({"data", "configurator"}, [])


def docstring_lines(path):
    """Lines of the file that belong to docstrings (string statements), counted with tokenize."""
    toks = list(tokenize.generate_tokens(io.StringIO(open(path).read()).readline))
    lines = set()
    for i, t in enumerate(toks):
        if t.type != tokenize.STRING:
            continue
        j = i - 1
        while j >= 0 and toks[j].type in (tokenize.NL, tokenize.COMMENT):
            j -= 1
        after = toks[i + 1].type if i + 1 < len(toks) else tokenize.NEWLINE
        if (j < 0 or toks[j].type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)) and \
                after in (tokenize.NEWLINE, tokenize.ENDMARKER):
            lines.update(range(t.start[0], t.end[0] + 1))
    return len(lines)


def test_sizes():
    """Stage files <= 450 lines; the README an entry point (<= 300 lines); docstrings <= 12% of the root
    .py files' lines."""
    for s in STAGES:
        n = sum(1 for _ in open(os.path.join(ROOT, f"{s}.py")))
        assert n <= 450, f"{s}.py has {n} lines"
    assert sum(1 for _ in open(os.path.join(ROOT, "README.md"))) <= 300
    root = glob.glob(os.path.join(ROOT, "*.py"))
    total = sum(sum(1 for _ in open(p)) for p in root)
    doc = sum(docstring_lines(p) for p in root)
    assert doc <= 0.12 * total, f"docstrings are {doc / total:.1%} of the root .py files' {total} lines"
