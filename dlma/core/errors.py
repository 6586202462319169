"""The one exception type users see: a message that says what is wrong and how to fix it."""


class DlmaError(Exception):
    """A user-facing error (bad input, bad params). The CLI prints it and exits with code 2."""
