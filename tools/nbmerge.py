"""Three-way merge of notebooks cell by cell (cells matched by id), for git's merge-driver interface.

    python tools/nbmerge.py BASE OURS THEIRS      # writes the merge into OURS; exit 1 if a cell still conflicts

A cell changed on one side only takes that side; a cell changed on both sides is merged line by line with
`git merge-file` (conflict markers inside the cell source when the edits overlap); cells added on either side keep
their place after the cell that precedes them on their side; a cell deleted on one side and unchanged on the other
is deleted. Use it as a merge driver (local to a clone, nothing committed):

    git config merge.nbcells.driver "python tools/nbmerge.py %O %A %B"
    echo '*.ipynb merge=nbcells' >> .git/info/attributes
"""
import json, subprocess, sys, tempfile
from pathlib import Path


def _load(p):
    try: return json.loads(Path(p).read_text())
    except (OSError, ValueError): return {'cells': [], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}


def _src(c): return ''.join(c['source']) if isinstance(c['source'], list) else c['source']


def _lines(text):
    ls = text.splitlines(keepends=True)
    return ls


def _merge_text(base, ours, theirs):
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for name, t in (('ours', ours), ('base', base), ('theirs', theirs)):
            p = Path(d) / name; p.write_text(t + '\n'); paths.append(str(p))
        r = subprocess.run(['git', 'merge-file', '-L', 'ours', '-L', 'base', '-L', 'theirs', *paths])
        return Path(paths[0]).read_text()[:-1] if Path(paths[0]).read_text().endswith('\n') else Path(paths[0]).read_text(), r.returncode != 0


def _cell_equal(a, b):
    return a is not None and b is not None and a['cell_type'] == b['cell_type'] and _src(a) == _src(b) and \
        a.get('metadata', {}) == b.get('metadata', {})


def merge(base_nb, ours_nb, theirs_nb):
    base = {c['id']: c for c in base_nb['cells']}
    ours = {c['id']: c for c in ours_nb['cells']}
    theirs = {c['id']: c for c in theirs_nb['cells']}
    conflicts = 0
    # order: ours' order, with theirs' new cells inserted after their predecessor in theirs
    order = [c['id'] for c in ours_nb['cells']]
    prev = None
    for c in theirs_nb['cells']:
        cid = c['id']
        if cid not in ours and cid not in base:
            pos = order.index(prev) + 1 if prev in order else (0 if prev is None else len(order))
            order.insert(pos, cid)
        if cid in order: prev = cid
    out = []
    for cid in order:
        b, o, t = base.get(cid), ours.get(cid), theirs.get(cid)
        if o is None and t is None: continue
        if o is None:                      # deleted by us (or added by them)
            if b is None: out.append(t)
            elif not _cell_equal(b, t):    # they changed a cell we deleted: keep theirs, flag it
                out.append(t); conflicts += 1
            continue
        if t is None:
            if b is None: out.append(o)    # added by us
            elif _cell_equal(b, o): continue  # deleted by them, unchanged by us
            else: out.append(o); conflicts += 1
            continue
        if _cell_equal(o, t) or _cell_equal(b, t): out.append(o); continue
        if _cell_equal(b, o): out.append(t); continue
        text, bad = _merge_text(_src(b) if b else '', _src(o), _src(t))
        conflicts += bad
        cell = dict(o)
        lines = _lines(text)
        cell['source'] = lines
        meta = dict(o.get('metadata', {}))
        if b is not None and o.get('metadata') == b.get('metadata'): meta = t.get('metadata', {})
        cell['metadata'] = meta
        out.append(cell)
    nb = dict(ours_nb)
    nb['cells'] = out
    return nb, conflicts


if __name__ == '__main__':
    b, o, t = sys.argv[1:4]
    nb, n = merge(_load(b), _load(o), _load(t))
    Path(o).write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + '\n')
    if n: print(f"nbmerge: {n} cell(s) with conflicts in {o}", file=sys.stderr)
    sys.exit(1 if n else 0)
