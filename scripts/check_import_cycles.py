"""Fails when modules of one package import each other in a cycle.

import-linter checks the layering between the workspace's packages; this checks inside
each of them. Imports under ``if TYPE_CHECKING:`` count: a cycle that only type checking
sees is still two modules that cannot be understood, tested or moved one without the
other. Imports inside functions count too (grimp reads every import statement).

    uv run python scripts/check_import_cycles.py               # every workspace package
    uv run python scripts/check_import_cycles.py aixiate_auth  # one or more packages

Prints each cycle with the import lines that make it, and exits 1 when there is one.
"""

import sys
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise

import grimp

PACKAGES = ("aixiate_core", "aixiate_audit", "aixiate_users", "aixiate_auth", "aixiate_api")


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` that hold a cycle: two modules or
    more, or one that imports itself. Each sorted, the list sorted (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(sorted(graph.get(root, ()))))]
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    found.append(sorted(component))
    return sorted(found)


def import_graph(package: str) -> tuple[grimp.ImportGraph, dict[str, set[str]]]:
    """grimp's graph of ``package`` (TYPE_CHECKING imports included, nothing external)
    and its direct imports between the package's own modules."""
    graph = grimp.build_graph(
        package,
        include_external_packages=False,
        exclude_type_checking_imports=False,
        cache_dir=None,
    )
    modules = graph.modules
    edges = {
        module: graph.find_modules_directly_imported_by(module) & modules for module in modules
    }
    return graph, edges


def describe(graph: grimp.ImportGraph, component: Sequence[str]) -> list[str]:
    """One cycle through the component's first module, each import with its line."""
    start = component[0]
    members = set(component)
    imported = sorted(graph.find_modules_directly_imported_by(start) & members)
    chain: tuple[str, ...] = (start, start)  # a module that imports itself
    for first in imported:
        if first == start:
            break
        back = graph.find_shortest_chain(importer=first, imported=start)
        if back is not None:
            chain = (start, *back)
            break
    lines = [f"  cycle: {' -> '.join(chain)}"]
    for importer, target in pairwise(chain):
        for detail in graph.get_import_details(importer=importer, imported=target):
            lines.append(
                f"    {importer}:{detail['line_number']}: {detail['line_contents'].strip()}"
            )
    if len(component) > len(set(chain)):
        lines.append(f"  (the component holds {len(component)} modules: {', '.join(component)})")
    return lines


def main(argv: Sequence[str]) -> int:
    packages = list(argv) or list(PACKAGES)
    failed = False
    for package in packages:
        graph, edges = import_graph(package)
        components = strongly_connected(edges)
        if not components:
            print(f"{package}: no import cycle among its {len(edges)} modules")
            continue
        failed = True
        print(f"{package}: {len(components)} import cycle(s)")
        for component in components:
            print("\n".join(describe(graph, component)))
    if failed:
        print(
            "Break each cycle: move what both modules need into a third module, or pass "
            "the dependency in (an argument, a constructor parameter, a callback).",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
