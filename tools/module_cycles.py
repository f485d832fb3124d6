#!/usr/bin/env python3
"""Import cycles between retort's modules, from the source text (no build needed).

Usage:  python3 tools/module_cycles.py [SRC_DIR]      (default: src)

Every file under SRC_DIR is a module (`a/b.rs` and `a/b/mod.rs` are `a::b`). A file depends on
a module when it names it in a path: `crate::a::b::Item`, `use crate::{a, b::c}`, `super::x`,
`self::x`. Two graphs are checked:

1. top-level modules (`train`, `eval`, `model`, ...): the layers. Any cycle here is reported.
2. files: any cycle of files is reported, except the one Rust makes on purpose: a parent
   module re-exporting (`pub use child::X`) or declaring (`mod child;`) its own children while
   the children use the parent's items.

Exit status 1 when a cycle is found, so CI can run it. Also prints the layer edges, e.g. to
check that `train` does not import `eval` (--forbid train:eval).
"""
import os
import re
import sys

PATH_RE = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+|::\{)")


def module_of(src, path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def brace_paths(text, start):
    """Paths inside `{...}` starting at text[start] == '{' (nested groups flattened)."""
    depth, i, item, out, prefix = 0, start, "", [], [""]
    while i < len(text):
        c = text[i]
        if c == "{":
            depth += 1
            prefix.append(prefix[-1] + item.strip())
            item = ""
        elif c == "}":
            if item.strip():
                out.append(prefix[-1] + item.strip())
            item = ""
            prefix.pop()
            depth -= 1
            if depth == 0:
                break
        elif c == ",":
            if item.strip():
                out.append(prefix[-1] + item.strip())
            item = ""
        else:
            item += c
        i += 1
    return [p.split(" as ")[0].strip() for p in out]


def references(text):
    """(anchor, path segments) for every crate/super/self path in `text`."""
    out = []
    for m in PATH_RE.finditer(text):
        anchor = m.group(1)
        if m.group(2) == "::{":
            for p in brace_paths(text, m.end() - 1):
                out.append((anchor, [s for s in p.split("::") if s and s != "self"]))
        else:
            out.append((anchor, m.group(2).split("::")[1:]))
    return out


def resolve(modules, here, anchor, segments, is_dir_module):
    if anchor == "crate":
        base = ()
    elif anchor == "self":
        base = here
    else:  # super, possibly repeated: super::super::x
        base = here[:-1]
        while segments and segments[0] == "super":
            base = base[:-1]
            segments = segments[1:]
    best = None
    for n in range(len(segments) + 1):
        cand = base + tuple(segments[:n])
        if cand in modules:
            best = cand
    return best


def sccs(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--forbid")]
    forbid = [tuple(a.split("=", 1)[1].split(":")) for a in sys.argv[1:] if a.startswith("--forbid=")]
    src = args[0] if args else "src"
    files = {}
    for root, _, names in os.walk(src):
        for n in names:
            if n.endswith(".rs"):
                p = os.path.join(root, n)
                files[module_of(src, p)] = p
    modules = set(files)
    file_graph, layer_graph = {}, {}
    for mod, path in files.items():
        text = strip_comments(open(path, encoding="utf-8").read())
        text = re.sub(r"#\[cfg\(test\)\]\s*mod\s+tests\s*\{.*", "", text, flags=re.S)  # unit tests may reach anywhere
        for anchor, segs in references(text):
            target = resolve(modules, mod, anchor, segs, path.endswith("mod.rs"))
            if target is None or target == mod or target == ():
                continue
            is_child = target[: len(mod)] == mod
            if not is_child:
                file_graph.setdefault(mod, set()).add(target)
            if mod and target and mod[0] != target[0]:
                layer_graph.setdefault(mod[0], set()).add(target[0])
    bad = False
    for comp in sccs(layer_graph):
        bad = True
        print("layer cycle:", " <-> ".join(comp))
    for comp in sccs(file_graph):
        bad = True
        print("file cycle:", " <-> ".join("::".join(c) for c in comp))
    for a, b in forbid:
        if b in layer_graph.get(a, ()):
            bad = True
            users = sorted("::".join(m) for m in files if m and m[0] == a and any(t[0] == b for t in file_graph.get(m, ())))
            print(f"forbidden: {a} imports {b} ({', '.join(users)})")
    print("layers:")
    for a in sorted(layer_graph):
        print(f"  {a} -> {', '.join(sorted(layer_graph[a]))}")
    print("import cycles found" if bad else "no import cycle")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
