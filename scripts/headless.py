"""A headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`): open a page from
disk, evaluate script in it, hover, press keys, take screenshots, and record what it asked the network for, what
it logged as an error and which dialogs it opened. No package beyond the standard library: the protocol is JSON
messages ended by a NUL byte, on file descriptors 3 (to the browser) and 4 (from it).

    with Browser() as browser:
        page = browser.open(Path("run.html"))
        page.evaluate("document.title")
        png = page.screenshot()

`find_chromium()` names the browser (`$CHROMIUM`, or chromium / chromium-browser / google-chrome on PATH).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL = "apt-get install -y chromium"  # Debian's package; what .ci/run and the test suite's fixture run


def find_chromium() -> str | None:
    """The browser to drive: $CHROMIUM, else the first of NAMES on PATH; None when there is none."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return next((found for name in NAMES if (found := shutil.which(name))), None)


def ensure_chromium() -> str | None:
    """The browser, installed first with Debian's apt where it is missing and this runs as root (what .ci/run does
    too); None where there is none and it cannot be installed here."""
    found = find_chromium()
    if found is not None or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return found
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": {**os.environ,
                                                                               "DEBIAN_FRONTEND": "noninteractive"}}
    if subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], **quiet).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], **quiet)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], **quiet)
    return find_chromium()


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium for the duration of a `with` block, in a scratch profile."""

    def __init__(self, executable: str | None = None, timeout: float = 60.0) -> None:
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise BrowserError(f"no Chromium found: install one ({INSTALL}) or set $CHROMIUM")
        self.timeout = timeout
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.buffer = b""

    def __enter__(self) -> Browser:
        self.profile = tempfile.TemporaryDirectory(prefix="samplecli-chromium-")
        ends = os.pipe() + os.pipe()
        # the browser's ends moved above 10 first, so that putting them on 3 and 4 cannot overwrite one still needed
        to_browser, from_browser_w = (fcntl.fcntl(ends[0], fcntl.F_DUPFD_CLOEXEC, 10),
                                      fcntl.fcntl(ends[3], fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(ends[0])
        os.close(ends[3])
        self.to_browser, self.from_browser = ends[1], ends[2]

        def wire() -> None:  # in the child: the pipe's ends on the descriptors the protocol names
            os.dup2(to_browser, 3)
            os.dup2(from_browser_w, 4)

        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start; the pages are our own files
        args = [self.executable, "--headless", "--remote-debugging-pipe", "--no-first-run",
                "--no-default-browser-check", "--disable-gpu", "--disable-extensions",
                "--disable-background-networking", "--disable-sync", "--disable-component-update", "--no-sandbox",
                "--hide-scrollbars", "--mute-audio", f"--user-data-dir={self.profile.name}", "about:blank"]
        self.process = subprocess.Popen(args, pass_fds=(3, 4), preexec_fn=wire, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser_w)
        return self

    def __exit__(self, *_: object) -> None:
        try:
            self.call("Browser.close")
        except (BrowserError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self.to_browser, self.from_browser):
            os.close(fd)
        self.profile.cleanup()

    # --- the protocol ---------------------------------------------------------------------------------------------

    def _read(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_browser], [], [], left)[0]:
                raise BrowserError("Chromium did not answer in time")
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise BrowserError("Chromium closed the pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer; events that come meanwhile are kept in `events`."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error'].get('message')}")
                return answer.get("result", {})
            if "method" in answer:
                self.events.append(answer)

    def wait_for(self, method: str, session: str | None = None, timeout: float | None = None) -> dict[str, Any]:
        """The first event `method` (of `session`) not seen yet; kept events are looked at first."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for index, event in enumerate(self.events):
                if event["method"] == method and (session is None or event.get("sessionId") == session):
                    return self.events.pop(index)["params"]
            answer = self._read(deadline)
            if "method" in answer:
                self.events.append(answer)

    def open(self, path: Path, *, width: int = 1280, height: int = 800, dark: bool = False) -> Page:
        """A new tab showing the file at `path`, loaded, in a window of `width` x `height` CSS pixels, with the
        colour scheme the page is told the system prefers."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session)
        self.call("Emulation.setDeviceMetricsOverride", session, width=width, height=height, deviceScaleFactor=1,
                  mobile=False)
        self.call("Emulation.setEmulatedMedia", session,
                  features=[{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}])
        page.url = path.resolve().as_uri()
        started = time.monotonic()
        self.call("Page.navigate", session, url=page.url)
        self.wait_for("Page.loadEventFired", session)
        page.load_seconds = time.monotonic() - started
        return page


class Page:
    """One tab of a Browser."""

    url: str = ""
    load_seconds: float = 0.0

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser, self.session = browser, session

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        return self.browser.call(method, self.session, **params)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able); BrowserError where it throws."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def hover(self, selector: str) -> None:
        """Scroll the first element matching `selector` into view and move the mouse over its centre."""
        box = self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                            "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
                            "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=box[0], y=box[1])

    def press(self, key: str) -> None:
        """Press and release a key (`ArrowRight`, `Tab`, `End`, ...) in the focused element."""
        codes = {"ArrowRight": 39, "ArrowLeft": 37, "ArrowUp": 38, "ArrowDown": 40, "Home": 36, "End": 35, "Tab": 9}
        for kind in ("rawKeyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key=key, code=key,
                      windowsVirtualKeyCode=codes.get(key, 0))

    def screenshot(self, full_page: bool = False) -> bytes:
        """A PNG of the viewport (or of the whole page)."""
        return base64.b64decode(self.call("Page.captureScreenshot", format="png",
                                          captureBeyondViewport=full_page)["data"])

    def pdf(self) -> bytes:
        """The page as printed (print styles), a PDF."""
        return base64.b64decode(self.call("Page.printToPDF", printBackground=True)["data"])

    def events(self, method: str) -> list[dict[str, Any]]:
        """Every event `method` of this tab seen so far (after a round trip, so that none is still on its way)."""
        self.evaluate("0")
        return [e["params"] for e in self.browser.events
                if e["method"] == method and e.get("sessionId") == self.session]

    def requests(self) -> list[str]:
        """The URLs the page asked for, its own included."""
        return [e["request"]["url"] for e in self.events("Network.requestWillBeSent")]

    def errors(self) -> list[str]:
        """What the page logged as an error: exceptions, console.error, and the browser's own errors about it (a
        Content-Security-Policy violation among them)."""
        found = [e["exceptionDetails"].get("text", "") + " " + str(e["exceptionDetails"].get("exception", {})
                                                                  .get("description", ""))
                 for e in self.events("Runtime.exceptionThrown")]
        found += [" ".join(str(a.get("value", a.get("description", ""))) for a in e["args"])
                  for e in self.events("Runtime.consoleAPICalled") if e["type"] in ("error", "assert")]
        found += [e["entry"]["text"] for e in self.events("Log.entryAdded") if e["entry"]["level"] == "error"]
        return found

    def dialogs(self) -> list[str]:
        """The messages of the dialogs (alert, confirm, prompt) the page opened."""
        return [e["message"] for e in self.events("Page.javascriptDialogOpening")]
