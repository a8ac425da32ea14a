"""Test doubles shared by the test modules."""

from __future__ import annotations

import threading


class FakeClock:
    """Virtual time for the GitHub client (and the emulator's rate-limit window): `sleep` advances
    `now` instantly and records how long it was asked for, so waits and backoffs take no time."""

    def __init__(self, now: float) -> None:
        self._now = now
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
