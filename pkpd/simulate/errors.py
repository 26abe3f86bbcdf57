"""The error type of the simulation layer."""


class SimulationError(ValueError):
    """A simulation that cannot be set up; the message says what was wrong and how to fix it."""
