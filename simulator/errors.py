"""Exception hierarchy. Every error a user can cause is a SimulatorError with a one-line message."""

from __future__ import annotations


class SimulatorError(Exception):
    """Base class: the CLI prints ``str(err)`` on one line and exits non-zero."""


class SpecError(SimulatorError):
    """A YAML/JSON/CSV input is malformed: names the file, the key path and what was expected."""

    def __init__(self, file: str, key_path: str, message: str):
        self.file = str(file)
        self.key_path = key_path
        self.message = message
        where = f"{self.file}: {key_path}" if key_path else self.file
        super().__init__(f"{where}: {message}")


class InfeasibleError(SimulatorError):
    """A plan that cannot run: it does not fit in memory or the parallelism does not divide the model."""


class LayoutError(InfeasibleError):
    """A parallel layout that cannot exist (a degree that does not divide the devices, heads or experts):
    bad input for the command line (exit 2), and a candidate to skip for the plan searches."""


class CalibrationError(SimulatorError):
    """Fitting efficiency parameters failed (too few rows, degenerate data)."""


class MeasurementError(SimulatorError):
    """A measurement CSV row is malformed."""
