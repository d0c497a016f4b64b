"""Exceptions that probdyn raises for a user's mistakes.

Each carries a sentence that names what is wrong and what was expected, so that the command line
can print it as one line and exit with a non-zero status.
"""


class ProbdynError(Exception):
    """Base class of every error probdyn raises for bad input."""


class DataError(ProbdynError, ValueError):
    """A recording does not follow the data convention (variable, index and expectation named)."""


class PriorError(ProbdynError, ValueError):
    """A custom prior names an unknown site or has the wrong shape or support."""


class ConfigError(ProbdynError, ValueError):
    """A run configuration has a missing, unknown or malformed key."""


class MemoryBudgetError(ProbdynError, MemoryError):
    """A step cannot fit even its smallest chunk in the memory budget (sizes named)."""
