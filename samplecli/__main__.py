"""The program: `samplecli` (the console script) and `python -m samplecli`.

The commands are imported inside `main`, under its handlers, so that a signal at any moment of start-up (Python
importing torch, the plugins loading) is one line and an exit status, never a traceback: Ctrl-C "interrupted" (130),
SIGTERM "terminated" (143). SIGTERM raises where Ctrl-C does, so a `kill` keeps what was generated as Ctrl-C does.
"""

import signal
import sys

from samplecli.errors import raise_terminated, stopped_by


def main() -> None:
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        from samplecli.cli import app

        app()
    except KeyboardInterrupt as exc:
        word, status = stopped_by(exc)
        print(word, file=sys.stderr)
        sys.exit(status)


if __name__ == "__main__":
    main()
