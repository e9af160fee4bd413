"""What the user hands over besides settings, checked before a model loads: text (a prompt, a text to score)
that has to be valid UTF-8, files to read, and output paths that have to be writable.

Text that is not valid UTF-8 is refused, never repaired: a tokenizer cannot take the surrogate escapes that
Python makes of undecodable bytes, and a silently replaced character would change what is generated or
scored. The error names where the text came from and the offset of the first bad byte.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
from pathlib import Path
from typing import IO

from samplecli.errors import SampleCliError, UsageError

FIX = "convert it to UTF-8 first, e.g. with `iconv -f latin1 -t utf-8`"
# the most a text (a prompt, a text to score) and a small file (a preset, messages, a template) may hold: a device
# such as /dev/zero, or a stream that never ends, is refused instead of read until memory runs out
TEXT_LIMIT, SMALL_LIMIT = 256 * 2**20, 16 * 2**20


@contextlib.contextmanager
def not_too_deep(where: str):
    """Around a JSON or TOML parser: arrays or tables nested deeper than Python's recursion goes (`[[[[...]]]]`,
    a hundred thousand deep) are one line naming `where`, not a RecursionError."""
    try:
        yield
    except RecursionError:
        raise UsageError(f"{where}: nested too deeply (arrays or objects inside each other more than "
                         f"{sys.getrecursionlimit()} levels); no setting or message needs that") from None


def _read_at_most(stream, limit: int, where: str) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise UsageError(f"{where}: more than {limit // 2**20} MB; give a smaller text")
    return data


def _bad_byte(text: str, index: int) -> tuple[int, str]:
    """The byte offset of the character at `index`, and that character as the byte(s) it stood for."""
    offset = len(text[:index].encode("utf-8", "surrogatepass"))
    char = text[index]
    if 0xDC80 <= ord(char) <= 0xDCFF:  # Python's surrogate escape of one undecodable byte
        return offset, f"0x{ord(char) - 0xDC00:02x}"
    return offset, f"U+{ord(char):04X} (a lone surrogate)"


def check_text(text: str, where: str) -> str:
    """`text` itself when it encodes to UTF-8; otherwise a UsageError naming `where` (e.g. "the prompt
    argument") and the offset of the first byte that was not UTF-8 (Python hands such bytes over as
    surrogate escapes, U+DC80..U+DCFF)."""
    for index, char in enumerate(text):
        if 0xD800 <= ord(char) <= 0xDFFF:
            offset, shown = _bad_byte(text, index)
            raise UsageError(f"{where}: not valid UTF-8 (byte {shown} at offset {offset}); {FIX}")
    return text


def decode_utf8(data: bytes, where: str, error: type[SampleCliError] = UsageError) -> str:
    """Bytes as text, or an error naming `where` and the offset of the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{where}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); {FIX}") \
            from None


def read_stdin(where: str = "the text on standard input", stream: IO[str] | None = None) -> str:
    """All of standard input as text, decoded strictly (the raw bytes where the stream has them)."""
    stream = sys.stdin if stream is None else stream
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        return decode_utf8(_read_at_most(buffer, TEXT_LIMIT, where), where)
    try:
        text = stream.read(TEXT_LIMIT + 1)
        if len(text) > TEXT_LIMIT:
            raise UsageError(f"{where}: more than {TEXT_LIMIT // 2**20} MB; give a smaller text")
        return check_text(text, where)
    except UnicodeDecodeError as exc:
        raise UsageError(f"{where}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset "
                         f"{exc.start}); {FIX}") from None


# where a FIFO is a stream the shell already feeds (`/dev/stdin`, process substitution's `/dev/fd/63`), not a named
# pipe that may have no other end yet
STREAM_PATHS = ("/dev/stdin", "/dev/stdout", "/dev/stderr", "/dev/fd/", "/proc/self/fd/")


def _named_fifo(path: Path, info: os.stat_result) -> bool:
    return stat.S_ISFIFO(info.st_mode) and not str(path).startswith(STREAM_PATHS)


def read_text_file(path: Path | str, flag: str, limit: int = TEXT_LIMIT) -> str:
    """A file's text (UTF-8), or one line naming the flag, the file and why it cannot be read: missing, a
    directory, a device (/dev/zero never ends), more than `limit` bytes, or not UTF-8. A pipe (/dev/stdin) is read."""
    path = Path(path)
    where = f"{flag} {path}: cannot read it"
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise UsageError(f"{where} (it is a directory)")
        if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
            raise UsageError(f"{where} (it is a device, not a file)")
        if _named_fifo(path, info) or stat.S_ISSOCK(info.st_mode):  # opening one waits for a writer, maybe for ever
            raise UsageError(f"{where} (it is a named pipe, not a regular file: reading it waits for a writer); give "
                             "a regular file, or /dev/stdin with the text piped in")
        with open(path, "rb") as file:
            data = _read_at_most(file, limit, f"{flag} {path}")
    except OSError as exc:
        raise UsageError(f"{where} ({exc.strerror or exc})") from None
    return decode_utf8(data, where)


def check_output_path(path: Path, flag: str) -> None:
    """Refuse, before anything slow happens, an output path that cannot be written: a missing directory,
    a directory itself, or a place where no file can be created (`/proc/x`).

    The check opens a regular file for appending (which does not truncate it) and removes it again when it did
    not exist before, so a failed run leaves no empty file behind; a FIFO or a device is only checked for
    permission; a named pipe (a FIFO that is not /dev/stdout or /dev/fd/N) is refused, as opening it would wait for
    a reader.
    """
    where = f"{flag} {path}"
    try:
        info = path.stat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise UsageError(f"{where}: cannot write there ({exc.strerror or exc})") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{where}: is a directory; give a file name")
    parent = path.parent
    if info is None and not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise UsageError(f"{where}: the directory {parent} {what}")
    if info is not None and (_named_fifo(path, info) or stat.S_ISSOCK(info.st_mode)):
        raise UsageError(f"{where}: is a named pipe, not a regular file (writing it waits for a reader); give a file, "
                         "or leave --output out and pipe standard output instead")
    if info is not None and not stat.S_ISREG(info.st_mode):
        if not os.access(path, os.W_OK):
            raise UsageError(f"{where}: cannot write there (permission denied)")
        return  # a FIFO, a device (/dev/null, /dev/stdout): opening it is the run's job
    try:
        with open(path, "a", encoding="utf-8") as probe:
            _lock(probe.fileno(), path, flag)  # refused now, not after the model loads (the lock ends with the probe)
    except OSError as exc:
        raise UsageError(f"{where}: cannot write there ({exc.strerror or exc})") from None
    if info is None:
        path.unlink(missing_ok=True)


def _lock(fd: int, path: Path, flag: str) -> None:
    """An exclusive lock on the regular file open at `fd`, or UsageError where another process holds one (another
    samplecli run writing the same --output). Where locks are not supported (no fcntl, some network filesystems)
    the file is written without one."""
    try:
        import fcntl
    except ImportError:
        return
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UsageError(f"{flag} {path}: another run is writing this file now; wait for it to end, or write to "
                         "another file") from None
    except OSError:
        return


class OutputFile:
    """A text stream for a run's payload whose first write failure (a full disk, /dev/full, which may only
    fail when flushed or closed) raises one SampleCliError naming it; what was written before stays. Later
    writes and the close do nothing, so a sink closing after the failure does not fail again."""

    def __init__(self, stream: IO[str], label: str, owned: bool = False) -> None:
        self.stream, self.label, self.owned, self.failed = stream, label, owned, False

    @classmethod
    def open(cls, path: Path, flag: str) -> OutputFile:
        """The file at `path`, emptied, and held with an exclusive lock for the run: a second run writing the same
        file is refused (one line) instead of interleaving with this one. The lock is taken before the file is
        emptied, so the refused run leaves the other's text as it is."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
        except OSError as exc:
            raise UsageError(f"{flag} {path}: cannot write there ({exc.strerror or exc})") from None
        try:
            _lock(fd, path, flag)
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.ftruncate(fd, 0)
            return cls(os.fdopen(fd, "w", encoding="utf-8"), f"{flag} {path}", owned=True)
        except BaseException:
            os.close(fd)
            raise

    def _guard(self, action, *args):
        if self.failed:
            return None
        try:
            return action(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            self.failed = True
            raise SampleCliError(f"{self.label}: writing failed ({exc.strerror or exc}); what was written before "
                                 "the failure stays") from None

    def write(self, text: str) -> int | None:
        return self._guard(self.stream.write, text)

    def flush(self) -> None:
        self._guard(self.stream.flush)

    def close(self) -> None:
        if self.owned:
            try:
                self._guard(self.stream.close)
            finally:
                if self.failed:
                    with contextlib.suppress(OSError):
                        self.stream.close()


def write_report(path: Path, text: str, flag: str = "--output") -> None:
    """Write a finished report (compare's) to `path`. When that fails, the report is not lost: it goes to a
    temporary file, and the one-line error says where."""
    try:
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
    except OSError as exc:
        import tempfile

        with tempfile.NamedTemporaryFile("w", encoding="utf-8", prefix="samplecli-report-", suffix=path.suffix or
                                         ".txt", delete=False) as saved:
            saved.write(text)
        raise SampleCliError(f"{flag} {path}: writing failed ({exc.strerror or exc}); the report is in {saved.name}"
                             ) from None


_ESCAPE = re.compile(r"""\\(?:([nrt'"\\])|x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4}))""")
_ESCAPED = {"n": "\n", "r": "\r", "t": "\t", "'": "'", '"': '"', "\\": "\\"}


def unescape(text: str) -> str:
    """A string with its backslash escapes read as llama.cpp reads them in a prompt or a stop string: `\\n`, `\\r`,
    `\\t`, `\\'`, `\\"`, `\\\\`, `\\xHH` and `\\uHHHH`; any other backslash stays as it is. `--stop '\\n\\n'` typed in
    a shell (where a newline is awkward to type) is then the blank line it means."""
    return _ESCAPE.sub(lambda m: _ESCAPED[m[1]] if m[1] else chr(int(m[2] or m[3], 16)), text)


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (one that exists; a missing one is nobody's twin)."""
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


__all__ = ["SMALL_LIMIT", "TEXT_LIMIT", "OutputFile", "check_output_path", "check_text", "decode_utf8", "unescape",
           "not_too_deep", "read_stdin",
           "read_text_file", "same_file", "write_report"]
