"""One exception type for every mistake a user can make; the CLI prints its message as one line."""


class LapelensError(ValueError):
    """Bad input: the message says what is wrong and what to do about it."""
