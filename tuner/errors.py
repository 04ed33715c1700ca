"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class TunerError(Exception):
    """Bad input from the user (file, value, model). Message must fit on one line."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class TrialFailed(Exception):
    """One candidate could not be scored (NaN/Inf images, out of memory, a config the methods reject):
    its trial fails with this reason stored, and the study goes on."""
