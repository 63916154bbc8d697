"""A dict that keeps its most recently used entries: the back ends' per-tape state.

A long-running process that builds many transforms (a parameter sweep that traces a new
function each time, keyword arguments that change) would otherwise keep every tape it
ever ran alive in the back ends' bookkeeping, with the kernels loaded for them.
"""
from __future__ import annotations

from collections import OrderedDict

MAX_TAPES = 1024         # per-tape bookkeeping (points seen, races, module names)
MAX_KERNELS = 128        # compiled kernel modules kept loaded in a process


class LRU(OrderedDict):
    """At most ``maxsize`` entries; adding one more drops the least recently used.

    ``get`` and assignment count as uses; ``in`` and iteration do not. ``on_evict(key,
    value)`` is called for each entry dropped to make room.

    >>> d = LRU(2)
    >>> d["a"], d["b"] = 1, 2
    >>> d.get("a")
    1
    >>> d["c"] = 3
    >>> list(d)
    ['a', 'c']
    """

    def __init__(self, maxsize: int, on_evict=None):
        super().__init__()
        self.maxsize = maxsize
        self.on_evict = on_evict

    def get(self, key, default=None):
        try:
            value = self[key]
            self.move_to_end(key)
        except KeyError:            # absent, or dropped by another thread meanwhile
            return default
        return value

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.maxsize:
            old_key, old_value = self.popitem(last=False)
            if self.on_evict is not None:
                self.on_evict(old_key, old_value)
