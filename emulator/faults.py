"""Scripted failures the emulator serves instead of (or before) a normal answer."""

from __future__ import annotations

import random
import re
import threading
from dataclasses import asdict, dataclass, field, fields

KINDS = frozenset({"500", "502", "503", "403", "404", "451", "429", "secondary", "primary", "drop",
                   "truncated", "slow"})


@dataclass
class Fault:
    """The next `times` requests whose path matches `path_regex` (after skipping `after`
    matches) get this fault. The regex is searched in the path relative to the base path,
    query string included (e.g. r"/pulls\\?" or r"page=2")."""

    kind: str
    path_regex: str = ".*"
    times: int = 1
    after: int = 0
    retry_after: float | None = None
    seconds: float | None = None
    # On /graphql, `primary` and `secondary` answer in GraphQL's shape: `{"errors": [{"type":
    # error_type, ...}]}` (primary: RATE_LIMITED unless told; secondary: REST's body unless told)
    # with HTTP `status` (primary: 200, secondary: 403 unless told).
    error_type: str | None = None
    status: int | None = None
    matched: int = field(default=0, init=False)
    served: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.kind = str(self.kind)
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {sorted(KINDS)}")
        self._pattern = re.compile(self.path_regex)

    @classmethod
    def from_dict(cls, raw: dict) -> Fault:
        """Build from admin-API JSON; unknown keys are rejected."""
        allowed = {f.name for f in fields(cls) if f.init}
        unknown = set(raw) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields {sorted(unknown)}")
        return cls(**raw)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def exhausted(self) -> bool:
        return self.served >= self.times


@dataclass
class FaultMix:
    """Random faults at given rates, as a flaky network and a busy GitHub serve them: each request
    whose path matches `path_regex` gets fault kind K with probability `rates[K]` (seeded; the
    order in which concurrent requests draw varies), after the scripted faults. `seconds` is a
    `slow` answer's delay."""

    rates: dict[str, float]
    path_regex: str = ".*"
    seed: int = 0
    seconds: float = 0.05
    retry_after: float | None = None  # the `retry-after` of its 429s and secondary limits (None: none)
    served: dict[str, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        unknown = set(self.rates) - KINDS
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; expected some of {sorted(KINDS)}")
        if sum(self.rates.values()) > 1:
            raise ValueError("fault rates add up to more than 1")
        self._pattern = re.compile(self.path_regex)
        self._random = random.Random(self.seed)

    def draw(self, path: str) -> Fault | None:
        """The fault this request gets, if any (the caller holds the FaultSet's lock)."""
        if not self._pattern.search(path):
            return None
        roll = self._random.random()
        for kind, rate in sorted(self.rates.items()):
            if roll < rate:
                self.served[kind] = self.served.get(kind, 0) + 1
                return Fault(kind, seconds=self.seconds if kind == "slow" else None,
                             retry_after=self.retry_after if kind in ("429", "secondary") else None)
            roll -= rate
        return None


class FaultSet:
    """Thread-safe queue of pending faults; the first matching live fault wins, then the mix."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.mix: FaultMix | None = None

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.mix = None

    def set_mix(self, mix: FaultMix | None) -> None:
        with self._lock:
            self.mix = mix

    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(self, path: str) -> Fault | None:
        """The fault to serve for this request, if any (updates the counters)."""
        with self._lock:
            for fault in self._faults:
                if not fault._pattern.search(path):
                    continue
                fault.matched += 1
                if fault.matched <= fault.after:
                    continue
                fault.served += 1
                if fault.exhausted:
                    self._faults.remove(fault)
                return fault
            return self.mix.draw(path) if self.mix is not None else None
