"""Placement preferences (swarm-behaviour 4.6): `spread=node.labels.<k>` (nested, highest precedence
first) spreads a service's tasks evenly over the values of a label before spreading over nodes.

Every node, whether or not it may take the task, sits in a tree with one level per preference,
keyed by its label value (a missing label is the value ""), and each branch counts the service's
active tasks below it. A task goes down the branch holding the fewest, skipping branches with no
node left that can take it, and within the leaf to the best-ranked node. Placing one task at a time
this way fills the emptiest branches first, which is swarmkit's even split. Without preferences the
tree is a single leaf: plain spread.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Sequence

from services.kernel.placement import filters, preferences
from services.kernel.placement.ask import Ask
from services.kernel.placement.nodeinfo import NodeInfo
from services.kernel.placement.ranking import Rank, rank


class _Branch:
    __slots__ = ("children", "count", "full", "heap")

    def __init__(self) -> None:
        self.count = 0
        self.children: dict[str, _Branch] = {}
        self.heap: list[Rank] = []
        self.full = False


class Tree:
    def __init__(self, infos: dict[str, NodeInfo], ask: Ask, pipeline: Sequence[filters.Filter],
                 failures: Counter[str]) -> None:
        self.infos = infos
        self.ask = ask
        self.pipeline = pipeline
        self.failures = failures
        levels = preferences.levels(ask.preferences)
        self.root = _Branch()
        self.paths: dict[str, list[_Branch]] = {}
        if not levels:  # plain spread, the common case: one leaf, no branch counts to keep
            self.root.heap = [self._rank(i) for i in infos.values() if filters.rejection(pipeline, ask, i) is None]
            heapq.heapify(self.root.heap)
            return
        for info in infos.values():
            path = [self.root]
            for label_of in levels:
                path.append(path[-1].children.setdefault(label_of(info.node), _Branch()))
            for branch in path:
                branch.count += info.active_by_service[ask.service_id]
            if filters.rejection(pipeline, ask, info) is None:
                path[-1].heap.append(self._rank(info))
            self.paths[info.node.id] = path
        for path in self.paths.values():
            heapq.heapify(path[-1].heap)

    def _rank(self, info: NodeInfo) -> Rank:
        return rank(info, self.ask.service_id, self.failures)

    def take(self) -> NodeInfo | None:
        """The node for the next task, or None when no node can take one."""
        return self._descend(self.root)

    def took(self, info: NodeInfo) -> None:
        """Record a task placed on `info` (whose tally the caller has already updated)."""
        path = self.paths.get(info.node.id) or [self.root]
        for branch in path:
            branch.count += 1
        heapq.heappush(path[-1].heap, self._rank(info))

    def _descend(self, branch: _Branch) -> NodeInfo | None:
        if not branch.children:
            return self._best(branch)
        while True:
            open_ = [(b.count, key) for key, b in branch.children.items() if not b.full]
            if not open_:
                branch.full = True
                return None
            child = branch.children[min(open_)[1]]
            info = self._descend(child)
            if info is not None:
                return info
            child.full = True

    def _best(self, leaf: _Branch) -> NodeInfo | None:
        """The leaf's best node that still passes (placing tasks may have filled one up)."""
        while leaf.heap:
            info = self.infos[heapq.heappop(leaf.heap)[-1]]
            if filters.rejection(self.pipeline, self.ask, info) is None:
                return info
        leaf.full = True
        return None
