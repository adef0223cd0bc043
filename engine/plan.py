"""The deterministic request plan: ids, seeds, label balance, and what ``--resume`` skips.

Each label has its own sequence of requests, ``<label>-<k>``; request ``k`` of a
label always gets the same seed for the same run seed, so a resumed run asks for
exactly what the interrupted one would have asked, minus what is done. The plan
is lazy (nothing is materialised per planned request) and adaptive: it keeps
issuing requests for a label while the examples accepted plus those expected
from requests in flight fall short of the label's quota, using the yield (kept
examples per request) observed so far.

A cluster run splits the plan into ``S`` disjoint shards (``shard=(k, S)``):
shard ``k`` owns the requests whose index ``g`` of a label has ``g % S == k``
(ids and seeds are those of the single plan, so ``S = 1`` is the plain plan),
and each label's quota is split across shards with its remainder spread over
them (:func:`shard_quotas`). A top-up round after the cross-shard dedup gets a
``namespace`` (ids ``<label>-<namespace>-<k>``) and explicit ``quota``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["PlannedRequest", "Planner", "quotas", "shard_cap", "shard_quotas", "stable_seed"]


def stable_seed(*parts: object) -> int:
    """A 31-bit seed from ``parts``, identical on every machine and Python version."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def quotas(labels: Sequence[str], n: int) -> dict[str, int]:
    """Split ``n`` across ``labels`` as evenly as possible (earlier labels take the remainder)."""
    base, extra = divmod(n, len(labels))
    return {label: base + (1 if i < extra else 0) for i, label in enumerate(labels)}


def shard_quotas(total: Mapping[str, int], shard: tuple[int, int]) -> dict[str, int]:
    """Shard ``k`` of ``S``'s part of every label's quota; the parts of all shards add up to ``total``.

    A label's remainder goes to the shards just after the label's position, so
    remainders of several labels land on different shards.
    """
    k, count = shard
    out: dict[str, int] = {}
    for i, (label, q) in enumerate(total.items()):
        base, extra = divmod(q, count)
        out[label] = base + (1 if (k - i) % count < extra else 0)
    return out


def shard_cap(cap: int, shard: tuple[int, int]) -> int:
    """Shard ``k`` of ``S``'s part of the request cap (at least 1)."""
    k, count = shard
    base, extra = divmod(cap, count)
    return max(1, base + (1 if k < extra else 0))


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    id: str
    label: str
    seed: int


class Planner:
    """Decides which request to send next.

    ``next()`` returns a request to send, or ``None`` when nothing should be sent
    right now (every label is covered by what is in flight, or the request cap is
    reached). ``finished`` tells whether every quota is met; ``exhausted`` whether
    the cap stops the run short of it.
    """

    def __init__(
        self,
        labels: Sequence[str],
        *,
        n: int,
        per_request: int = 1,
        seed: int = 0,
        cap: int,
        balance: bool = True,
        done: set[str] | None = None,
        accepted: Counter[str] | None = None,
        requests_done: Counter[str] | None = None,
        shard: tuple[int, int] = (0, 1),
        namespace: str | None = None,
        quota: Mapping[str, int] | None = None,
    ) -> None:
        if not labels:
            raise ValueError("a task needs at least one label")
        k, count = shard
        if not 0 <= k < count:
            raise ValueError(f"shard {k} of {count} does not exist")
        self.labels = list(labels)
        self.shard = (k, count)
        self.namespace = namespace
        if quota is not None:
            self.quota = {label: int(quota.get(label, 0)) for label in self.labels}
            n = sum(self.quota.values()) if balance else n
        elif balance:
            self.quota = shard_quotas(quotas(self.labels, n), self.shard)
        else:
            n = shard_quotas({"": n}, self.shard)[""]
            self.quota = {label: n for label in self.labels}
        if count > 1:
            cap = shard_cap(cap, self.shard)
        if balance:
            n = sum(self.quota.values())
        self.total = n
        self.balance = balance
        self.per_request = per_request
        self.seed = seed
        self.cap = cap
        self._done = set(done or ())
        self.accepted: Counter[str] = Counter(accepted or {})
        self.requests_done: Counter[str] = Counter(requests_done or {})
        self.in_flight: Counter[str] = Counter()
        self._next_k: dict[str, int] = dict.fromkeys(self.labels, 0)
        self.issued = sum(self.requests_done.values())

    # -- state --------------------------------------------------------------------------------

    def need(self, label: str) -> int:
        if not self.balance:
            return max(0, self.total - sum(self.accepted.values()))
        return max(0, self.quota[label] - self.accepted[label])

    @property
    def finished(self) -> bool:
        if not self.balance:
            return sum(self.accepted.values()) >= self.total
        return all(self.accepted[label] >= self.quota[label] for label in self.labels)

    @property
    def exhausted(self) -> bool:
        return self.issued >= self.cap

    @property
    def outstanding(self) -> int:
        return sum(self.in_flight.values())

    def _yield(self, label: str) -> float:
        """Expected kept examples per request for ``label`` (optimistic until observed)."""
        reqs = self.requests_done[label]
        if reqs < 3:
            return float(self.per_request)
        return max(0.05, self.accepted[label] / reqs)

    def _shortfall(self, label: str) -> float:
        expected = self.in_flight[label] * self._yield(label)
        if not self.balance:
            total_expected = sum(self.in_flight[lb] * self._yield(lb) for lb in self.labels)
            return self.need(label) - total_expected
        return self.need(label) - expected

    # -- decisions ----------------------------------------------------------------------------

    def next(self) -> PlannedRequest | None:
        if self.issued >= self.cap:
            return None
        best, best_short = None, 0.0
        if self.balance:
            # the hot path (once per request): _shortfall inlined
            accepted, done, in_flight, per_request = self.accepted, self.requests_done, self.in_flight, self.per_request
            for label, quota in self.quota.items():
                got = accepted[label]
                if got >= quota:
                    continue
                reqs = done[label]
                expected = per_request if reqs < 3 else max(0.05, got / reqs)
                short = quota - got - in_flight[label] * expected
                if short > best_short:
                    best, best_short = label, short
        else:
            for label in self.labels:
                short = self._shortfall(label)
                if short > best_short:
                    best, best_short = label, short
        if best is None:
            return None
        if not self.balance:
            # unbalanced: spread requests round-robin by the fewest issued so far
            best = min(self.labels, key=lambda lb: self.requests_done[lb] + self.in_flight[lb])
        k = self._next_k[best]
        rid, seed = self._request(best, k)
        while rid in self._done:
            k += 1
            rid, seed = self._request(best, k)
        self._next_k[best] = k + 1
        self.in_flight[best] += 1
        self.issued += 1
        return PlannedRequest(id=rid, label=best, seed=seed)

    def _request(self, label: str, j: int) -> tuple[str, int]:
        """The id and seed of this plan's ``j``-th request for ``label``."""
        if self.namespace is not None:
            return f"{label}-{self.namespace}-{j:07d}", stable_seed(self.seed, self.namespace, label, j)
        k, count = self.shard
        g = j * count + k  # the index in the one plan all shards split
        return f"{label}-{g:07d}", stable_seed(self.seed, label, g)

    def hold(self, request_id: str, label: str) -> bool:
        """On resume: ``request_id`` was sent earlier and its outcome is still to come (a submitted batch).

        It counts as in flight (and against the cap) and is never planned again; its outcome is
        ``record``-ed like any other. False, and nothing changes, if the run already recorded it.
        """
        if request_id in self._done:
            return False
        self._done.add(request_id)
        self.in_flight[label] += 1
        self.issued += 1
        return True

    def record(self, label: str, *, kept: int) -> None:
        """A request for ``label`` finished (in any way) and ``kept`` of its examples were accepted."""
        self.in_flight[label] -= 1
        self.requests_done[label] += 1
        self.accepted[label] += kept

    def room(self, label: str) -> int:
        """How many more examples of ``label`` may be accepted (the rest is surplus)."""
        return self.need(label)
