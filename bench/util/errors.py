"""One-line user-facing errors: raised for bad input, printed without a traceback by the entry points."""


class UserError(Exception):
    """Bad input the user can fix; the message says what is wrong and how to fix it."""


class DiskFull(UserError):
    """A write failed because its file system is full: the whole run stops (no cell can be saved)."""
