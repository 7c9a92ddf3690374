"""The errors a stage raises that a user can act on; the CLI turns each into a message and a non-zero exit."""


class InputError(ValueError):
    """Bad user input: the message names the file, the key and what was expected."""


class TrainingDiverged(RuntimeError):
    """The loss became non-finite or left the scale the data allow: the model's numbers would mean nothing.

    The CLI turns it into a message and exit status 3."""


class AlreadyRunning(RuntimeError):
    """Another live process writes the same output (``atomic.leased``): a job left running by a Snakemake killed
    with kill -9, beside its rerun. The message names the process and how to stop it."""


class Terminated(BaseException):
    """SIGTERM arrived (``scancel``, a cluster's time limit, Snakemake stopping its jobs): raised in the main thread
    so that every open output and tracking run unwinds as on Ctrl-C. A BaseException, as KeyboardInterrupt is,
    so that no ``except Exception`` takes it for an error to carry on from."""
