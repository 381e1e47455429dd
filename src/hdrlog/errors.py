"""One exception type for every failure the user must read: one clear sentence, exit code 2."""


class HdrlogError(Exception):
    """A failure explained in one sentence (the message), including its fix where there is one."""

    exit_code = 2
