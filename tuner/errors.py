"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class TunerError(Exception):
    """Bad input from the user (file, value, model). Message must fit on one line."""

    exit_code = 2

    max_chars = 1000  # a 5 MB value quoted in a message must not make a 5 MB line

    def __init__(self, message: str):
        text = " ".join(str(message).split())
        if len(text) > self.max_chars:
            cut = len(text) - self.max_chars + 200
            text = f"{text[:self.max_chars - 300]} ...[{cut} characters cut]... {text[-100:]}"
        super().__init__(text)


class TrialFailed(Exception):
    """One candidate could not be scored (NaN/Inf images, out of memory, a config the methods reject):
    its trial fails with this reason stored, and the study goes on."""
