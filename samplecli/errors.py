"""The one error type shown to the user: the CLI turns it into a single line on stderr and an exit code."""


class SampleCliError(Exception):
    """An error whose message is written for the user (no traceback is shown)."""

    exit_code = 1


class UsageError(SampleCliError):
    """Bad input on the command line or in a preset: the user can fix it by changing what they typed."""

    exit_code = 2
