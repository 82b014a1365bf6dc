#!/usr/bin/env python3
"""The graph of memodiff's modules (who names whom as crate::X, comments and unit tests
excluded) and its cycles; exits 1 when the modules of that level form a cycle.

    scripts/module-graph.py [SRC_DIR] [LEVEL]    LEVEL 1: src/X (default), 2: src/X/Y
"""
import os, re, sys, itertools
root = sys.argv[1] if len(sys.argv) > 1 else 'src'
level = int(sys.argv[2]) if len(sys.argv) > 2 else 1
def module_of(path):
    rel = os.path.relpath(path, root)[:-3].split(os.sep)
    if rel[-1] == 'mod': rel = rel[:-1]
    return '::'.join(rel[:level]) if rel and rel[0] not in ('lib', 'main') else None
edges = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs') or f == 'tests.rs': continue
        p = os.path.join(d, f); m = module_of(p)
        if not m: continue
        text = open(p).read()
        text = "\n".join(l for l in text.split("\n") if not l.lstrip().startswith("//"))
        text = re.sub(r"#\[cfg\(test\)\]\s*mod tests\s*\{.*", "", text, flags=re.S)  # unit tests excluded
        for t in re.findall(r'crate::((?:[a-z_]+::){0,%d}[a-z_]+)' % (level - 1), text):
            t = '::'.join(t.split('::')[:level])
            if t != m and not t.startswith(m + '::') and not m.startswith(t + '::'):
                edges.setdefault(m, set()).add(t)
nodes = sorted(set(edges) | {t for v in edges.values() for t in v})
# Tarjan SCC
index, low, stack, on, sccs, i = {}, {}, [], set(), [], [0]
def strong(v):
    index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in index: strong(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        c = []
        while True:
            w = stack.pop(); on.discard(w); c.append(w)
            if w == v: break
        if len(c) > 1: sccs.append(sorted(c))
sys.setrecursionlimit(10000)
for v in nodes:
    if v not in index: strong(v)
for m in nodes: print(f"{m:12} -> {', '.join(sorted(edges.get(m, ())))}")
print("cycles:", sccs if sccs else "none")
sys.exit(1 if sccs else 0)
