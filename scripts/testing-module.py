#!/usr/bin/env python3
"""Print src/testing.rs: every memodiff::testing::a::b::item path the integration tests and
benches name, as a mirror of the module tree re-exporting exactly those items.

    scripts/testing-module.py > src/testing.rs      (after a test starts naming a new item)
"""
import re, os, sys, glob
root = sys.argv[1] if len(sys.argv) > 1 else '.'
ROOT_API = set(sys.argv[2].split(',')) if len(sys.argv) > 2 else set()
files = glob.glob(f'{root}/tests/**/*.rs', recursive=True) + glob.glob(f'{root}/benches/**/*.rs', recursive=True) + glob.glob(f'{root}/examples/**/*.rs', recursive=True)
paths = set()
def expand(prefix, body):
    # body: contents of a {...} group, may nest
    out = []; depth = 0; cur = ''
    for ch in body:
        if ch == '{': depth += 1
        if ch == '}': depth -= 1
        if ch == ',' and depth == 0:
            out.append(cur.strip()); cur = ''
        else: cur += ch
    if cur.strip(): out.append(cur.strip())
    res = []
    for part in out:
        m = re.match(r'^([\w:]*?)(?:::)?\{(.*)\}$', part, re.S)
        if m:
            p = m.group(1); res += expand(prefix + ([p] if p else []), m.group(2))
        else:
            part = re.sub(r'\s+as\s+\w+$', '', part)
            res.append(prefix + [x for x in part.split('::') if x])
    return res
for f in files:
    text = open(f).read()
    text = re.sub(r'//[^\n]*', '', text)
    for m in re.finditer(r'\buse\s+memodiff::([^;]*);', text, re.S):
        body = m.group(1).strip()
        if '{' in body:
            i = body.index('{'); pre = body[:i].rstrip(':').split('::')
            pre = [p for p in pre if p]
            for p in expand(pre, body[i+1:body.rindex('}')]): paths.add(tuple(p))
        else:
            body = re.sub(r'\s+as\s+\w+$', '', body)
            paths.add(tuple(body.split('::')))
    for m in re.finditer(r'\bmemodiff::((?:\w+::)*\w+)', re.sub(r'\buse\s+memodiff::[^;]*;', '', text, flags=re.S)):
        paths.add(tuple(m.group(1).split('::')))
# A path is module... + item. Decide modules by the source tree.
def is_module(parts):
    p = os.path.join(root, 'src', *parts)
    return os.path.isfile(p + '.rs') or os.path.isdir(p)
tree = {}
for p in sorted(paths):
    if p[0] == 'testing': p = p[1:]
    if not p or p[0] in ('self', 'binary'): continue
    # longest module prefix
    k = len(p)
    while k > 0 and not is_module(p[:k]): k -= 1
    mods, rest = p[:k], p[k:]
    if not mods:
        continue  # a root item
    node = tree
    for m in mods: node = node.setdefault(m, {})
    if rest and rest[0] == 'self':
        node['__whole__'] = True
    elif rest:
        node.setdefault('__items__', set()).add(rest[0])
    else:
        node.setdefault('__whole__', True)
# Modules imported whole: their items are named as `last::item` in the files.
alltext = "\n".join(re.sub(r'//[^\n]*', '', open(f).read()) for f in files)
def fill_whole(node, path):
    if node.get('__whole__') and path:
        for m in re.finditer(r'(?<![\w])' + path[-1] + r'((?:::\w+)+)', alltext):
            rest = m.group(1).split('::')[1:]
            sub, here = node, list(path)
            while rest and is_module(tuple(here) + (rest[0],)):
                here.append(rest[0]); sub = sub.setdefault(rest[0], {}); rest = rest[1:]
            if rest:
                sub.setdefault('__items__', set()).add(rest[0])
    for k in list(node):
        if not k.startswith('__'): fill_whole(node[k], path + [k])
fill_whole(tree, [])
HEADER = """//! The inner stages, for memodiff's own integration tests and benchmarks: the CPU and GPU
//! twins, the f64 reference, the file formats. Not part of the library's API (hidden from
//! its documentation); it mirrors the module tree, so a test names
//! `memodiff::testing::engine::cpu::...` where the code says `crate::engine::cpu::...`.
//! Written by `scripts/testing-module.py` from what the tests name: an item not listed
//! here is unused outside the crate, and the compiler reports it if it is unused inside.
"""
def emit(node, path, indent):
    out = []
    items = sorted(node.get('__items__', ()))
    if items:
        out.append(f"{indent}pub use crate::{'::'.join(path)}::{{{', '.join(items)}}};")
    for m in sorted(k for k in node if not k.startswith('__')):
        out.append(f"{indent}pub mod {m} {{")
        out += emit(node[m], path + [m], indent + '    ')
        out.append(f"{indent}}}")
    return out
lines = emit(tree, [], '')
print(HEADER)
print('\n'.join(lines))
whole = []
def find_whole(node, path):
    if node.get('__whole__'): whole.append('::'.join(path))
    for k in node:
        if not k.startswith('__'): find_whole(node[k], path + [k])
find_whole(tree, [])

