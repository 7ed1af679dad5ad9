"""Mutation testing of scalp_lib with mutmut 3: one module at a time, in a workspace beside the project.

    python tools/mutate.py splits backtest      # run (or resume) these modules, then print the scores
    python tools/mutate.py --report             # scores of every module already run, and the survivors
    python tools/mutate.py --jobs 14 backtest   # 14 mutants tested at once (a many-core machine)
    make mutate                                  # every module of tools/mutation.toml (long: not part of make test)

Why a workspace (build/mutate/<module>/) and not the project itself:
- mutmut 3 mutates a function by copying it and calling the copy through a trampoline, and it leaves decorated
  functions alone. scalp_lib's money and label arithmetic sits in `@njit` kernels, and nbdev puts methods on classes
  with fastcore's `@patch`. In the workspace copy of the module under test (and only there) `@njit` lines are removed
  and every `@patch` function becomes a plain function patched onto its class right after its definition (a
  `@property` in a class body becomes `name = property(_prop_name)`), so mutmut mutates them like any other function.
- The runs set NUMBA_DISABLE_JIT=1: the kernels run as the Python they are written in, so each mutant is the code the
  tests execute. Nothing is compiled and no numba cache is read, so a stale compiled kernel cannot stand in for a
  mutant. tests/test_backtest.py, test_labels.py and test_metrics.py check that each kernel's Python form returns
  what the compiled kernel returns, so the mutants are mutants of the code the library runs.
- Notebook tests (tests/test_notebooks.py) run the notebooks' own cells, not scalp_lib/*.py: never used here.

The counts: killed (a test failed), timeout (counted as killed: the tests did not finish), survived, no tests (no
selected test calls the function: counted as survived). Score = (killed + timeout) / all mutants run.
"""
from __future__ import annotations
import argparse, ast, json, os, re, shutil, subprocess, sys, time
from pathlib import Path

try: import tomllib
except ImportError: import tomli as tomllib   # Python 3.10

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / 'build' / 'mutate'
CONFIG = ROOT / 'tools' / 'mutation.toml'
KILLED, SURVIVED = {1, 3}, {0}
TIMEOUT, NO_TESTS = {36, -24, 24, 152, 255}, {5, 33}

# ---------------------------------------------------------------------------------------------- the source rewrite
def _deco_kind(d:ast.expr)->str:
    "'jit' for numba's njit/jit, 'patch' for fastcore's patch, 'property', else 'other'."
    f = d.func if isinstance(d, ast.Call) else d
    name = f.attr if isinstance(f, ast.Attribute) else getattr(f, 'id', '')
    if name in ('njit', 'jit'): return 'jit'
    if name == 'patch': return 'patch'
    if name == 'property' and not isinstance(d, ast.Call): return 'property'
    return 'other'

def _patch_kwargs(d:ast.expr)->str:
    "The keyword arguments of a `@patch(...)` call, as source."
    if not isinstance(d, ast.Call): return ''
    return ''.join(f', {k.arg}={ast.unparse(k.value)}' for k in d.keywords)

def mutable_source(src:str)->tuple[str, list[str]]:
    "The module with `@njit` removed and `@patch` / `@property` functions made plain (see the module docstring)."
    tree, lines = ast.parse(src), src.splitlines()
    edits = []   # (first line, last line, replacement lines), 1-based inclusive, applied bottom-up
    notes = []
    def rewrite(fn:ast.FunctionDef, indent:str, in_class:bool):
        kinds = [_deco_kind(d) for d in fn.decorator_list]
        if not kinds or 'other' in kinds: return
        first, last = fn.decorator_list[0].lineno, fn.end_lineno
        body = lines[fn.lineno - 1:last]
        gone = [f"{indent}# mutation workspace: {lines[d.lineno - 1].strip()} removed" for d in fn.decorator_list]
        if set(kinds) == {'jit'}:
            edits.append((first, fn.lineno - 1, gone)); notes.append(f'{fn.name}: @njit removed'); return
        if kinds == ['patch'] and not in_class:
            ann = fn.args.args[0].annotation if fn.args.args else None
            if ann is None: return
            cls = ast.unparse(ann).strip('\'"')
            new = f"{cls.replace('.', '_')}_{fn.name}"
            body[0] = re.sub(rf'\bdef\s+{re.escape(fn.name)}\s*\(', f'def {new}(', body[0], count=1)
            tail = f"patch({new}, nm={fn.name!r}{_patch_kwargs(fn.decorator_list[0])})"
            edits.append((first, last, gone + body + [tail])); notes.append(f'{cls}.{fn.name}: @patch -> {new}'); return
        if kinds == ['property'] and in_class:
            new = f'_prop_{fn.name}'
            body[0] = re.sub(rf'\bdef\s+{re.escape(fn.name)}\s*\(', f'def {new}(', body[0], count=1)
            edits.append((first, last, gone + body + [f'{indent}{fn.name} = property({new})']))
            notes.append(f'{fn.name}: @property -> {new}')
    for node in tree.body:
        if isinstance(node, ast.FunctionDef): rewrite(node, '', False)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    rewrite(item, lines[item.lineno - 1][:len(lines[item.lineno - 1]) - len(lines[item.lineno - 1].lstrip())], True)
    for a, b, new in sorted(edits, key=lambda e: -e[0]): lines[a - 1:b] = new
    out = '\n'.join(lines) + '\n'
    ast.parse(out)
    return quiet_text(out), notes

def _indent(line:str)->str: return line[:len(line) - len(line.lstrip())]

def quiet_text(src:str)->str:
    """Docstrings removed and every `raise` statement between `# pragma: no mutate start/end` lines.

    Mutating a docstring or the words of an error message is not a bug that costs money or leaks the future, and
    each such mutant costs a test run; the condition that leads to the raise is still mutated. A `raise` on the
    line of its `if`/`else` is moved to a line of its own first (same meaning)."""
    tree, lines = ast.parse(src), src.splitlines()
    edits = []   # (first, last, replacement), 1-based inclusive
    for node in ast.walk(tree):
        body = getattr(node, 'body', None)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and len(body) > 1:
            d = body[0]
            if isinstance(d, ast.Expr) and isinstance(d.value, ast.Constant) and isinstance(d.value.value, str) \
                    and lines[d.lineno - 1][:d.col_offset].strip() == '' and lines[d.end_lineno - 1][d.end_col_offset:].strip() == '' \
                    and d.lineno > node.body[0].lineno - 1 and body[1].lineno > d.end_lineno:
                edits.append((d.lineno, d.end_lineno, []))
        if isinstance(node, ast.Raise):
            first, last = lines[node.lineno - 1], lines[node.end_lineno - 1]
            if last[node.end_col_offset:].strip() not in ('',) and not last[node.end_col_offset:].strip().startswith('#'): continue
            head = first[:node.col_offset]
            text = [first[node.col_offset:]] + lines[node.lineno:node.end_lineno]
            if head.strip() == '':
                ind = head
                edits.append((node.lineno, node.end_lineno, [f'{ind}# pragma: no mutate start'] + [head + text[0]] + text[1:] + [f'{ind}# pragma: no mutate end']))
            elif head.rstrip().endswith(':'):
                ind = _indent(first) + '    '
                edits.append((node.lineno, node.end_lineno, [head.rstrip(), f'{ind}# pragma: no mutate start', ind + text[0]] + text[1:] + [f'{ind}# pragma: no mutate end']))
    edits.sort(key=lambda e: -e[0])
    for a, b, new in edits: lines[a - 1:b] = new
    out = '\n'.join(lines) + '\n'
    ast.parse(out)
    return out

# ---------------------------------------------------------------------------------------------- the workspace
def _write_if_changed(path:Path, text:str):
    "Write only when the content differs (mutmut keeps results of files whose time stamp did not move)."
    if path.exists() and path.read_text() == text: return
    path.parent.mkdir(parents=True, exist_ok=True); path.write_text(text)

def _toml_list(xs): return '[' + ', '.join(json.dumps(x) for x in xs) + ']'

def build_workspace(module:str, spec:dict, defaults:dict)->Path:
    "build/mutate/<module>/: scalp_lib (the module rewritten), the plain tests, settings.ini, a pyproject for mutmut."
    ws = WORK / module
    for f in sorted((ROOT / 'scalp_lib').glob('*.py')):
        text = f.read_text()
        if f.stem == module:
            text, notes = mutable_source(text)
            _write_if_changed(ws / 'rewrites.txt', '\n'.join(notes) + '\n')
        _write_if_changed(ws / 'scalp_lib' / f.name, text)
    for f in sorted((ROOT / 'tests').glob('*.py')):
        if f.name != 'test_notebooks.py': _write_if_changed(ws / 'tests' / f.name, f.read_text())
    _write_if_changed(ws / 'settings.ini', (ROOT / 'settings.ini').read_text())
    sel = list(spec['tests'])
    for d in spec.get('deselect', []): sel += ['--deselect', d]
    pyproject = (ROOT / 'pyproject.toml').read_text()
    markers = re.search(r'markers = \[.*?\]', pyproject, re.S).group(0)
    _write_if_changed(ws / 'pyproject.toml', f"""# generated by tools/mutate.py: mutation run of scalp_lib/{module}.py
[tool.mutmut]
source_paths = ["scalp_lib"]
only_mutate = ["scalp_lib/{module}.py"]
also_copy = ["settings.ini"]
pytest_add_cli_args = {_toml_list(defaults.get('pytest_args', []))}
pytest_add_cli_args_test_selection = {_toml_list(sel)}
use_git_change_detection = false
timeout_multiplier = {spec.get("timeout_multiplier", defaults.get("timeout_multiplier", 15.0))}

[tool.pytest.ini_options]
{markers}
""")
    return ws

def mutmut_env()->dict:
    env = dict(os.environ, NUMBA_DISABLE_JIT='1', OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', MPLBACKEND='Agg',
               PYTHONHASHSEED='0', TQDM_DISABLE='1')
    env.pop('PYTHONPATH', None)
    return env

def _patterns(module:str, spec:dict)->list[str]:
    "mutmut mutant-name globs for the `functions` of a module (method `C.m` -> xǁCǁm)."
    out = []
    for f in spec.get('functions', []):
        if '.' in f:
            c, m = f.split('.', 1)
            out += [f'scalp_lib.{module}.xǁ{c}ǁ{m}__mutmut_*', f'scalp_lib.{module}.xǁ{c}ǁ_prop_{m}__mutmut_*']
        else: out.append(f'scalp_lib.{module}.x_{f}__mutmut_*')
    return out

def run_module(module:str, spec:dict, defaults:dict, max_children:int=1, names:list|None=None)->int:
    ws = build_workspace(module, spec, defaults)
    mutmut = Path(sys.executable).parent / 'mutmut'
    cmd = ['nice', '-n', '19', str(mutmut), 'run', '--max-children', str(max_children), *(names or _patterns(module, spec))]
    t0 = time.time()
    with open(ws / 'run.log', 'w') as log:
        rc = subprocess.call(cmd, cwd=ws, env=mutmut_env(), stdout=log, stderr=subprocess.STDOUT)
    secs = ws / 'run_seconds.txt'                     # summed over resumed runs
    before = int(secs.read_text()) if secs.exists() else 0
    secs.write_text(f'{before + time.time() - t0:.0f}\n')
    return rc

# ---------------------------------------------------------------------------------------------- scores
def _selected(name:str, module:str, spec:dict)->bool:
    pats = _patterns(module, spec)
    if not pats: return True
    import fnmatch
    return any(fnmatch.fnmatchcase(name, p) for p in pats)

def score(module:str, spec:dict)->dict|None:
    meta = WORK / module / 'mutants' / 'scalp_lib' / f'{module}.py.meta'
    if not meta.exists(): return None
    codes = {k: v for k, v in json.loads(meta.read_text())['exit_code_by_key'].items() if _selected(k, module, spec)}
    run = {k: v for k, v in codes.items() if v is not None and v != 34}
    killed = [k for k, v in run.items() if v in KILLED]
    timeout = [k for k, v in run.items() if v in TIMEOUT]
    survived = [k for k, v in run.items() if v in SURVIVED]
    no_tests = [k for k, v in run.items() if v in NO_TESTS]
    other = [k for k, v in run.items() if k not in set(killed + timeout + survived + no_tests)]
    n = len(run)
    secs = (WORK / module / 'run_seconds.txt')
    return dict(module=module, mutants=len(codes), run=n, killed=len(killed), timeout=len(timeout), survived=len(survived),
                no_tests=len(no_tests), other=len(other), not_run=len(codes) - n,
                score_pct=round(100 * (len(killed) + len(timeout)) / n, 1) if n else float('nan'),
                seconds=int(secs.read_text()) if secs.exists() else None,
                survivors=sorted(survived + no_tests + other))

def _strip_text(fn_src:str)->str:
    "The function's AST with its docstrings and the arguments of every `raise X(...)` replaced: logic only."
    tree = ast.parse(fn_src)
    for node in ast.walk(tree):
        body = getattr(node, 'body', None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], 'value', None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            body[0] = ast.Pass()
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            node.exc.args, node.exc.keywords = [], []
    return ast.dump(tree)

def classify(orig:str, mutant:str)->str:
    "'docstring or message' when the mutant differs from the original only in docstrings or raised errors' messages."
    try: return 'docstring or message' if _strip_text(orig) == _strip_text(mutant) else 'logic'
    except SyntaxError: return 'logic'

def sources(module:str, names:list[str])->dict:
    "(original, mutant) source of each mutant's function, read by mutmut inside the workspace."
    if not names: return {}
    code = ("import json,sys,libcst as cst\nfrom mutmut.mutation.diff_apply import read_original_function, read_mutant_function, read_mutants_module, find_mutant\n"
            "out = {}\nfor n in json.load(sys.stdin):\n    mod = read_mutants_module(find_mutant(n).path)\n"
            "    out[n] = [cst.Module([read_original_function(mod, n)]).code.strip(), cst.Module([read_mutant_function(mod, n)]).code.strip()]\n"
            "print(json.dumps(out))")
    r = subprocess.run([sys.executable, '-c', code], cwd=WORK / module, input=json.dumps(names), capture_output=True, text=True, env=mutmut_env())
    return json.loads(r.stdout) if r.returncode == 0 else {}

def diffs(module:str, names:list[str])->dict:
    "The diff of each mutant, read by mutmut itself inside the workspace."
    if not names: return {}
    code = ("import json,sys\nfrom mutmut.mutation.diff_apply import get_diff_for_mutant\n"
            "print(json.dumps({n: get_diff_for_mutant(n) for n in json.load(sys.stdin)}))")
    r = subprocess.run([sys.executable, '-c', code], cwd=WORK / module, input=json.dumps(names), capture_output=True,
                       text=True, env=mutmut_env())
    if r.returncode: return {n: f'(no diff: {r.stderr.strip().splitlines()[-1:]})' for n in names}
    return json.loads(r.stdout)

def report(modules:list[str], cfg:dict, show_diffs:bool=True, out:Path|None=None):
    "Scores per module; survivors split into logic mutants and docstring / error-message text mutants, with their diffs."
    rows = []
    for m in modules:
        s = score(m, cfg['modules'][m])
        if not s: continue
        src = sources(m, s['survivors'])
        s['text_only'] = sorted(n for n in s['survivors'] if n in src and classify(*src[n]) != 'logic')
        s['logic'] = [n for n in s['survivors'] if n not in set(s['text_only'])]
        n_logic = s['run'] - len(s['text_only'])
        s['logic_score_pct'] = round(100 * (s['killed'] + s['timeout']) / n_logic, 1) if n_logic else float('nan')
        rows.append(s)
    lines = ['| module | mutants run | killed | timeout | survived | no tests | score | of which text-only survivors | score without them | run time |',
             '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for s in rows:
        lines.append(f"| {s['module']} | {s['run']} | {s['killed']} | {s['timeout']} | {s['survived']} | {s['no_tests']} | "
                     f"{s['score_pct']} % | {len(s['text_only'])} | {s['logic_score_pct']} % | {s['seconds'] or '?'} s |")
    text = '\n'.join(lines) + '\n'
    if show_diffs:
        for s in rows:
            if not s['survivors']: continue
            d = diffs(s['module'], s['survivors'])
            for title, names in (('logic', s['logic']), ('docstring or error-message text only', s['text_only'])):
                text += f"\n## {s['module']}: {len(names)} surviving, {title}\n"
                for name in names:
                    body = '\n'.join(l for l in d.get(name, '').splitlines() if l.startswith(('+', '-')) and not l.startswith(('+++', '---')))
                    text += f"\n### {name}\n```diff\n{body}\n```\n"
    if out: out.write_text(text)
    print(text)
    return rows

def main(argv=None):
    cfg = tomllib.loads(CONFIG.read_text())
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('modules', nargs='*', help=f"modules to run (default: all of {CONFIG.name})")
    p.add_argument('--report', action='store_true', help='only print the scores (and survivors) of runs already made')
    p.add_argument('--no-diffs', action='store_true', help='scores only, without the surviving mutants')
    p.add_argument('--survivors', action='store_true', help='run again only the mutants that survived the last run (after adding tests)')
    p.add_argument('--fresh', action='store_true', help='delete the workspace first (forget earlier results)')
    p.add_argument('--out', type=Path, help='also write the report (markdown) to this file')
    p.add_argument('--jobs', type=int, default=1, help='mutants tested at once (mutmut --max-children); default 1')
    a = p.parse_args(argv)
    modules = a.modules or list(cfg['modules'])
    unknown = [m for m in modules if m not in cfg['modules']]
    if unknown: p.error(f"unknown module(s) {unknown}; {CONFIG.name} has {list(cfg['modules'])}")
    if not a.report:
        for m in modules:
            if a.fresh and (WORK / m).exists(): shutil.rmtree(WORK / m)
            print(f'mutating scalp_lib/{m}.py ...', flush=True)
            names = None
            if a.survivors:
                last = score(m, cfg['modules'][m])
                names = last['survivors'] if last else None
                if not names: print('  no survivors to run again'); continue
            rc = run_module(m, cfg['modules'][m], cfg.get('defaults', {}), max_children=a.jobs, names=names)
            if rc: print(f'  mutmut exited {rc}: see {WORK / m / "run.log"}', flush=True)
    report(modules, cfg, show_diffs=not a.no_diffs, out=a.out)

if __name__ == '__main__': main()
