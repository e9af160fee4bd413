"""The one error type shown to the user: the CLI turns it into a single line on stderr and an exit code."""


class SampleCliError(Exception):
    """An error whose message is written for the user (no traceback is shown)."""

    exit_code = 1


class CutShort(SampleCliError):
    """An engine's answer that ended before it was whole (no answer in time, a closed connection, a stream without
    its last event). What the command keeps of its work is the command's to say, not the engine's: `generate`
    has written its tokens as they came, `score` has nothing until the last one (`error_boundary(kept=...)`)."""


class UsageError(SampleCliError):
    """Bad input on the command line or in a preset: the user can fix it by changing what they typed."""

    exit_code = 2


class SettingError(UsageError):
    """A bad value of named settings. The core names the settings (`max_new_tokens`); the CLI's error boundary
    shows the flags that set them instead (`--max-new-tokens`). The template holds each setting as `{name}`."""

    def __init__(self, template: str, *settings: str) -> None:
        self.template, self.settings = template, settings
        super().__init__(self.shown(lambda setting: f"`{setting}`"))

    def shown(self, name_of) -> str:
        """The message with each setting shown as `name_of(setting)` (its flag, for the command line)."""
        text = self.template
        for setting in self.settings:
            text = text.replace("{" + setting + "}", name_of(setting))
        return text


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread where Ctrl-C raises KeyboardInterrupt, so that a `kill` runs the same
    `finally` blocks as Ctrl-C does and keeps what was generated; only the word and the exit status (143) differ."""

    signal_number = 15


def raise_terminated(signum, frame) -> None:  # a signal handler's signature
    raise Terminated()


def stopped_by(exc: KeyboardInterrupt) -> tuple[str, int]:
    """What a stop by signal says and its exit status: Ctrl-C "interrupted" (130), SIGTERM "terminated" (143)."""
    if isinstance(exc, Terminated):
        return "terminated", 128 + Terminated.signal_number
    return "interrupted", 130
