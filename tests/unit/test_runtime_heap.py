"""freeze_heap: a service's loaded libraries leave the collector's scans; its garbage does not stay."""

from __future__ import annotations

import gc
import weakref

from fireman.common.runtime import freeze_heap


class Node:
    def __init__(self) -> None:
        self.itself = self  # a reference cycle: only the cycle collector frees it


def test_freeze_heap_collects_garbage_first_and_exempts_what_is_alive() -> None:
    garbage = Node()
    collected = weakref.ref(garbage)
    del garbage
    alive = Node()
    try:
        freeze_heap()
        assert collected() is None, "a cycle dropped before the freeze would be kept for good"
        assert gc.get_freeze_count() > 0
        assert not any(obj is alive for obj in gc.get_objects()), "frozen objects are still scanned"
    finally:
        gc.unfreeze()  # other tests' heaps are theirs
    assert any(obj is alive for obj in gc.get_objects())
