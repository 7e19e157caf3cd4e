"""The one exception infrastructure code raises for conditions an operator must fix."""


class InfraError(Exception):
    """Something outside the code is wrong (port taken, binary missing, database down).

    The message is one line saying what happened and what to do.
    """
