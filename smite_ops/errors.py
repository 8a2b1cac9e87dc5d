"""The base class of every error caused by a user's input (a file, a folder, a configuration value).

Such errors carry one line naming the input and the problem; the command line prints that line and exits
with status 2 instead of showing a traceback. Errors that indicate a bug stay ordinary exceptions.
"""


class InputError(ValueError):
    """A problem with user input; ``str(error)`` is one line naming the file (or key) and the problem."""
