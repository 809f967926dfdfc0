"""The step graph: a topological order, and the cycle that prevents one.

::

    order(["eval", "train", "prep"], {"train": ["prep"], "eval": ["train"]})
    # ['prep', 'train', 'eval']
    order(["a", "b"], {"a": ["b"], "b": ["a"]})   # raises Cycle(['a', 'b', 'a'])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class Cycle(Exception):
    """The steps depend on each other in a loop; ``path`` is the loop, first step last too."""

    def __init__(self, path: list[str]) -> None:
        super().__init__(" → ".join(path))
        self.path = path


def order(names: Iterable[str], depends_on: Mapping[str, Iterable[str]]) -> list[str]:
    """``names`` so that every step comes after the steps it depends on.

    Among steps free to go, the order of ``names`` is kept (a file's order is the
    order a person reads). A loop raises ``Cycle`` with the loop's steps.
    """
    names = list(names)
    done: list[str] = []
    placed: set[str] = set()
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in placed:
            return
        if name in visiting:
            raise Cycle(visiting[visiting.index(name):] + [name])
        visiting.append(name)
        for dep in depends_on.get(name, ()):
            visit(dep)
        visiting.pop()
        placed.add(name)
        done.append(name)

    for name in names:
        visit(name)
    return done


def dependents(name: str, depends_on: Mapping[str, Iterable[str]]) -> set[str]:
    """Every step that needs ``name``, directly or through others."""
    found: set[str] = set()
    frontier = [name]
    while frontier:
        current = frontier.pop()
        for step, deps in depends_on.items():
            if current in deps and step not in found:
                found.add(step)
                frontier.append(step)
    return found
