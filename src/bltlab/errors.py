"""The one error type users see: a one-line message, printed without a traceback."""


class BltlabError(Exception):
    """A user-facing error (bad file, bad row, bad flag). The CLI prints it on one line."""
