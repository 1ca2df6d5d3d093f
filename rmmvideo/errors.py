"""One error type for user mistakes: the CLI prints it as a single line and exits non-zero."""


class UserError(Exception):
    """A problem with the user's input or options (bad file, bad flag), not a bug."""
