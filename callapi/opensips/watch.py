"""
One observer registered with a C{watch()} method (the dialog registry, the
liveness status and their fakes): an L{ISubscription} whose C{cancel}
removes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zope.interface import implementer

from callapi.interfaces import ISubscription


@implementer(ISubscription)
class Watch:
    """
    Adds C{observer} to C{observers} now; L{cancel} takes it out again.

    @param observers: the list the watched object calls, in order.
    @param observer: the callable to add.
    """

    def __init__(self, observers: list[Callable[[Any], None]], observer: Callable[[Any], None]) -> None:
        self._observers, self._observer = observers, observer
        observers.append(observer)

    def cancel(self) -> None:
        """Stop calling the observer.  Idempotent."""
        if self._observer in self._observers:
            self._observers.remove(self._observer)
