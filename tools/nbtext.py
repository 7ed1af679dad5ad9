"""Convert notebooks to and from a plain-text form for editing with text tools.

The notebook in `nbs/` stays the source of truth; the text form is a scratch copy.

    python tools/nbtext.py to-nb  draft.txt nbs/02_features.ipynb
    python tools/nbtext.py to-txt nbs/02_features.ipynb draft.txt

Text form: each cell starts with a marker line `%% md`, `%% code`, or `%% code tags=a,b`, followed by
`id=<cell id>` when the cell has one. Ids are kept on the way back, so a round trip changes only what you edited
(and notebook diffs and merges stay small); a new cell without an id gets a fresh one.
"""
import json, sys, uuid
from pathlib import Path

def txt_to_nb(src, dst):
    cells, cur = [], None
    for line in Path(src).read_text().splitlines():
        if line.startswith('%% '):
            if cur is not None: cells.append(cur)
            parts = line[3:].split()
            kind = 'markdown' if parts[0] == 'md' else 'code'
            tags, cid = [], None
            for p in parts[1:]:
                if p.startswith('tags='): tags = [t for t in p[5:].split(',') if t]
                if p.startswith('id='): cid = p[3:]
            cur = {'kind': kind, 'tags': tags, 'id': cid, 'lines': []}
        elif cur is not None: cur['lines'].append(line)
    if cur is not None: cells.append(cur)
    nb_cells, seen = [], set()
    for c in cells:
        lines = c['lines']
        while lines and not lines[-1].strip(): lines.pop()
        while lines and not lines[0].strip(): lines.pop(0)
        source = [l + '\n' for l in lines]
        if source: source[-1] = source[-1].rstrip('\n')
        meta = {'tags': c['tags']} if c['tags'] else {}
        cid = c['id'] if c['id'] and c['id'] not in seen else uuid.uuid4().hex[:8]
        seen.add(cid)
        cell = {'cell_type': c['kind'], 'id': cid, 'metadata': meta, 'source': source}
        if c['kind'] == 'code': cell.update(execution_count=None, outputs=[])
        nb_cells.append(cell)
    nb = {'cells': nb_cells, 'metadata': {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}},
          'nbformat': 4, 'nbformat_minor': 5}
    Path(dst).write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + '\n')

def nb_to_txt(src, dst):
    nb = json.loads(Path(src).read_text())
    out = []
    for c in nb['cells']:
        tags = c.get('metadata', {}).get('tags', [])
        head = '%% md' if c['cell_type'] == 'markdown' else '%% code'
        if tags: head += ' tags=' + ','.join(tags)
        if c.get('id'): head += ' id=' + c['id']
        src_text = ''.join(c['source']) if isinstance(c['source'], list) else c['source']
        out += [head, src_text, '']
    Path(dst).write_text('\n'.join(out))

if __name__ == '__main__':
    cmd, a, b = sys.argv[1:4]
    {'to-nb': txt_to_nb, 'to-txt': nb_to_txt}[cmd](a, b)
