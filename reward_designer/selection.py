"""Which candidates win, and how a round's training budget is spent.

A ``Selector`` names the best candidate of a run; an ``Allocation`` decides
which of a round's accepted programs train, with how much of the budget. Today
each has one entry (the best by fitness; every candidate to the full budget);
other ways to choose and to spend (keep the top half, stop a hopeless training
early) are one class and one line in ``SELECTORS`` or ``ALLOCATIONS``.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Protocol, Sequence, TypeVar

from .executor import Executor, parallel
from .records import CandidateRecord

T = TypeVar("T")


class Selector(Protocol):
    def best(self, candidates: Sequence[CandidateRecord]) -> CandidateRecord | None:
        """The winner among ``candidates``; None when none can win."""
        ...


class BestFitness:
    """The trained candidate with the highest fitness; ties go to the earlier one, so a resumed
    run picks the same best."""

    def best(self, candidates: Sequence[CandidateRecord]) -> CandidateRecord | None:
        trained = [c for c in candidates if c.status == "trained" and c.fitness is not None]
        return max(trained, key=lambda c: (c.fitness, -c.iteration, -c.index), default=None)


class Allocation(Protocol):
    def run(self, accepted: Iterable[T], train: Callable[[T], CandidateRecord],
            executor: Executor) -> Iterator[CandidateRecord]:
        """Train the round's ``accepted`` programs through ``train`` (one whole candidate: its
        training and analysis), yielding each record once it is final."""
        ...


class FullBudget:
    """Every accepted program trains to the whole budget, ``executor.slots`` at once."""

    def run(self, accepted, train, executor):
        yield from parallel(executor, train, accepted)


SELECTORS: dict[str, type] = {"best-fitness": BestFitness}
ALLOCATIONS: dict[str, type] = {"full": FullBudget}
