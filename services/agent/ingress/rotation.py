"""Round robin over a route's backends, remembered per published port across table rebuilds."""

from __future__ import annotations

from services.agent.ingress.table import Backend, Key, Route


class RoundRobin:
    def __init__(self) -> None:
        self._next: dict[Key, int] = {}

    def order(self, route: Route) -> list[Backend]:
        """Every backend once, starting after the one the previous connection started with: the
        first is tried, the rest are the fallbacks when it refuses."""
        backends = route.backends
        if not backends:
            return []
        key = (route.protocol, route.port)
        start = self._next.get(key, 0) % len(backends)
        self._next[key] = start + 1
        return [*backends[start:], *backends[:start]]
