"""The app's route lookup: routes in registration order, static paths in a
dict, and for each static path only the patterns that can match it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rawserve.routing import APIRoute, Match


class RouteTable:
    """Routes in registration order, with static paths in a dict: the first
    registered route that matches wins, as in starlette, without trying every
    regex for the common case of a path without parameters."""

    __slots__ = ("_dynamic", "_dynamic_for", "_static", "routes")

    def __init__(self, routes: Sequence[APIRoute]) -> None:
        self.routes = list(routes)
        self._static: dict[str, list[tuple[int, APIRoute]]] = {}
        self._dynamic: list[tuple[int, APIRoute]] = []
        for i, route in enumerate(self.routes):
            if route.is_static:
                self._static.setdefault(route.path, []).append((i, route))
            else:
                self._dynamic.append((i, route))
        # Whether a pattern matches a path depends on the path alone: for each
        # static path, the dynamic routes that can match it are known now, and
        # a request for it (/predict) need not try every pattern (six regex
        # matches per request with the inference app's routes).
        self._dynamic_for: dict[str, list[tuple[int, APIRoute]]] = {
            path: [(i, r) for i, r in self._dynamic if r.path_regex.match(path) is not None]
            for path in self._static
        }

    def lookup(self, method: str, path: str) -> tuple[APIRoute | None, dict[str, Any], set[str]]:
        """(route, path params, _) on a match; (None, {}, allowed methods) when
        only other methods match the path (405); (None, {}, empty) otherwise."""
        best_index = len(self.routes)
        best: APIRoute | None = None
        best_params: dict[str, Any] = {}
        static = self._static.get(path)
        dynamic = self._dynamic
        if static is not None:
            dynamic = self._dynamic_for[path]
            for i, route in static:
                if method in route.methods:
                    best_index, best = i, route
                    break
        for i, route in dynamic:
            if i > best_index:
                break
            match, values = route.matches(method, path)
            if match is Match.FULL:
                best, best_params = route, values
                break
        if best is not None:
            return best, best_params, set()
        allowed: set[str] = set()
        if static is not None:
            for _, route in static:
                allowed |= route.methods
        for _, route in dynamic:
            if route.path_regex.match(path) is not None:
                allowed |= route.methods
        return None, {}, allowed

    def matches_any(self, path: str) -> bool:
        if path in self._static:
            return True
        return any(route.path_regex.match(path) is not None for _, route in self._dynamic)
