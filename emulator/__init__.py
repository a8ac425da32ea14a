"""Deterministic GitHub API emulator (REST, and GraphQL for pull requests' children) for the demo,
the tests and the benchmark."""

from emulator.data import DROP_KEY, MAX_SERVED_FILES, Dataset
from emulator.faults import Fault, FaultMix, FaultSet
from emulator.server import GitHubEmulator

__all__ = ["DROP_KEY", "MAX_SERVED_FILES", "Dataset", "Fault", "FaultMix", "FaultSet", "GitHubEmulator"]
