"""How long to wait before trying again, and when to stop: one retry policy for every client.

* Without word from the server, capped exponential backoff with jitter: the
  ``n``-th retry waits a random time in ``[b/2, b]`` with
  ``b = min(max_delay_s, base_delay_s * 2**n)`` (:func:`backoff_seconds`).
* A wait the server asked for (``Retry-After`` and the like) is honoured in full,
  never cut to ``max_delay_s``: retrying before it is over only earns another
  refusal and burns the budget.
* An operation gives up after ``max_attempts`` attempts, or when the next wait
  would take the time it has spent past ``max_total_s`` (:class:`RetryBudget`).

The HTTP connectors (:mod:`connectors.http`, Graph's JSON batches) and the
OpenSearch bulk writer all count their retries here; each decides what is worth
retrying and how it reports giving up.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` counts the first try; ``max_total_s`` bounds one operation's time."""

    max_attempts: int = 8
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    max_total_s: float = 300.0

    @classmethod
    def attempts_only(cls, retries: int, base_delay_s: float, max_delay_s: float) -> RetryPolicy:
        """``retries`` retries after the first try, with no bound on the total time."""
        return cls(retries + 1, base_delay_s, max_delay_s, math.inf)


def backoff_seconds(retry: int, policy: RetryPolicy, rand: Callable[[], float]) -> float:
    """The jittered backoff before retry number ``retry`` (0 for the first retry)."""
    base = min(policy.max_delay_s, policy.base_delay_s * (2**retry))
    return base / 2 + rand() * base / 2


@dataclass(frozen=True)
class Wait:
    """What to do after a failed attempt: wait ``delay_s``, unless the budget ran out."""

    delay_s: float
    server_asked: bool  # the delay is the server's, not our backoff
    out_of_attempts: bool
    out_of_time: bool

    @property
    def give_up(self) -> bool:
        return self.out_of_attempts or self.out_of_time


class RetryBudget:
    """One operation's failed attempts, counted against a :class:`RetryPolicy`.

    >>> budget = RetryBudget(RetryPolicy(max_attempts=3), rand=lambda: 1.0)
    >>> [budget.after_failure(spent_s=0.0).delay_s for _ in range(2)]
    [1.0, 2.0]
    >>> budget.after_failure(spent_s=3.0).give_up
    True
    """

    def __init__(self, policy: RetryPolicy, rand: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self.failures = 0
        self._rand = rand

    def can_retry(self) -> bool:
        """Whether one more failure would still leave an attempt to make."""
        return self.failures + 1 < self.policy.max_attempts

    def after_failure(self, spent_s: float, server_wait_s: float | None = None) -> Wait:
        """Count a failed attempt; the wait before the next one, or that it is time to stop.

        :param spent_s: the time the operation has taken so far (the caller's clock:
            wall time, or the waits alone).
        :param server_wait_s: how long the server asked to wait, if it did.
        """
        self.failures += 1
        asked = server_wait_s is not None
        if server_wait_s is not None:
            delay = server_wait_s
        else:
            delay = min(
                backoff_seconds(self.failures - 1, self.policy, self._rand),
                self.policy.max_delay_s,
            )
        return Wait(
            delay_s=delay,
            server_asked=asked,
            out_of_attempts=self.failures >= self.policy.max_attempts,
            out_of_time=spent_s + delay > self.policy.max_total_s,
        )
