"""The simulator's one exception family: every message is written for the person at the keyboard."""


class SimulatorError(ValueError):
    """A scenario, clip set or simulator flag that cannot be used; the message says which and why."""
