"""Which candidates win, and how a round's training budget is spent.

A ``Selector`` names the best candidate of a run; an ``Allocation`` decides
which of a round's accepted programs train, with how much of the budget:
``full`` trains every one to the whole budget, ``halving`` (successive
halving) trains all to a share of it and only the better half, by the fitness
measured there, further. Another way to choose or to spend is one class and
one line in ``SELECTORS`` or ``ALLOCATIONS``.
"""

from __future__ import annotations

import functools
import math
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
    def run(self, accepted: Iterable[T], train: Callable[..., CandidateRecord],
            executor: Executor, updates: int | None = None) -> Iterator[CandidateRecord]:
        """Train the round's ``accepted`` programs through ``train(item, budget=1.0)`` (one candidate:
        its training to that fraction of the steps, continuing an earlier shorter one, and its
        analysis; under 1, the fitness there only), yielding each record once it is final.
        ``updates``: the PPO updates the whole budget is (the trainer's planned steps over its batch),
        the grain a share of it is trained in; None where the caller does not know it."""
        ...


class FullBudget:
    """Every accepted program trains to the whole budget, ``executor.slots`` at once."""

    def run(self, accepted, train, executor, updates=None):
        yield from parallel(executor, train, accepted)


class SuccessiveHalving:
    """Successive halving (Jamieson & Talwalkar 2016): every accepted program trains to ``first`` of the
    budget; the better half, by the fitness the analyze worker measured there, continues its training
    to twice that, and so on; the last one left trains to the whole budget, and is analyzed as under
    ``full``. The others end "culled", with the budget they had and their fitness there.

    With 8 candidates and ``first`` 1/8 the round spends 2.5 budgets of steps where ``full`` spends 8.

    The first cut comes after ``min_updates`` PPO updates at least, however small ``first`` of the
    budget is: after one or two updates a policy is still close to its random start, and a ranking
    there is mostly noise that culls good programs (at 8192 steps, 1/8 of the budget is half an
    update). The price is in small budgets: under ``min_updates / first`` updates (80; 164k steps in
    batches of 2048) the first rung is a larger share, and the round spends more than 2.5 budgets, up
    to all of ``full``'s where the whole budget is under ``min_updates``. Without ``updates`` (a
    caller that does not know the grain) the rungs are the plain fractions.
    """

    def __init__(self, first: float = 0.125, keep: float = 0.5, min_updates: int = 10):
        self.first, self.keep, self.min_updates = first, keep, min_updates

    def rungs(self, updates: int | None = None) -> list[float]:
        """The shares of the budget the round cuts at: ``first``, doubling, under the whole; with the
        budget's ``updates``, each a whole number of updates and the first ``min_updates`` at least."""
        shares = [self.first * 2**k for k in range(math.ceil(-math.log2(self.first)))]
        if updates is None:
            return shares
        out = []
        for k, share in enumerate(shares):
            u = max(round(share * updates), self.min_updates * 2**k)
            if u >= updates:
                break
            out.append(u / updates)
        return out

    def run(self, accepted, train, executor, updates=None):
        alive = list(accepted)
        for budget in self.rungs(updates):
            if len(alive) < 2:
                break
            scored = []
            # Every record of the rung, then the cut (a generator left unfinished would cancel the executor).
            records = list(parallel(executor, functools.partial(train, budget=budget), alive))
            for item, rec in zip(alive, records):
                if rec.status != "trained" or rec.fitness is None:
                    yield rec  # failed where it stopped: final
                else:
                    scored.append((item, rec))
            # Ties go to the earlier candidate, so a resumed round keeps the same ones.
            order = sorted(range(len(scored)), key=lambda i: (-scored[i][1].fitness, i))
            kept = set(order[:max(1, math.ceil(len(scored) * self.keep))])
            for i in sorted(set(range(len(scored))) - kept):
                yield scored[i][1].model_copy(update={"status": "culled"})
            alive = [scored[i][0] for i in sorted(kept)]
        yield from parallel(executor, train, alive)


SELECTORS: dict[str, type] = {"best-fitness": BestFitness}
ALLOCATIONS: dict[str, type] = {"full": FullBudget, "halving": SuccessiveHalving}
