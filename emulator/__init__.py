"""Deterministic GitHub REST API emulator for the demo, the tests and the benchmark."""

from emulator.data import MAX_SERVED_FILES, Dataset
from emulator.faults import Fault, FaultSet
from emulator.server import GitHubEmulator

__all__ = ["MAX_SERVED_FILES", "Dataset", "Fault", "FaultSet", "GitHubEmulator"]
