"""The error every stage raises for bad user input; the CLI turns it into a message and exit status 2."""


class InputError(ValueError):
    """Bad user input: the message names the file, the key and what was expected."""
