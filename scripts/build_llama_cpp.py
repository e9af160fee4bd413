"""Build llama.cpp's `llama-server` from source and convert a Hugging Face GPT-2 directory to GGUF, cached.

    python scripts/build_llama_cpp.py server                     # prints the path of a built llama-server
    python scripts/build_llama_cpp.py gguf [--outtype f32|f16|q8_0|q4_k_m|q4_0] [--model DIR]   # a GGUF's path
    python scripts/build_llama_cpp.py source                     # prints the vendored llama.cpp source directory

The llama.cpp source is the copy vendored in PyPI's `llama-cpp-python` sdist (pinned below), so the build needs
PyPI, cmake and a C++ compiler, and nothing else. Everything lands in a cache outside the clone, keyed by version:

    ${SAMPLECLI_CACHE:-~/.cache/samplecli}/llama.cpp-<version>/
        src/                 the vendored llama.cpp (with gguf-py and convert_hf_to_gguf.py)
        build/               the cmake build tree (kept, so that later targets build incrementally)
        bin/llama-server     a statically linked server
        gguf/<name>-<hash>-<outtype>.gguf   converted models, keyed by a hash of the model directory's files

Each step holds an exclusive lock file (fcntl.flock) while it checks and fills its part of the cache, and each
artifact is written under a temporary name and renamed into place, so concurrent invocations wait for one
another and an interrupted one never leaves a half-written file under a final name.

f16 and f32 come from llama.cpp's converter; q8_0, q4_k_m and q4_0 from its quantizer (`llama_model_quantize`, what
`llama-quantize` runs) applied to the f32 file, cached beside it.

Importable: `server_binary()`, `gguf_model(model_dir=None, outtype="f32")`, `source_dir()`, and `serve(...)`, which
starts the built server on the converted bundled model and waits until it answers (the tests, the tour script and
the remote benchmark all start it so).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"
ROOT = Path(__file__).resolve().parent.parent
BUNDLED_MODEL = ROOT / "samplecli" / "bundled_model"
CONVERTED = ("f32", "f16")  # written by llama.cpp's converter from the Hugging Face weights
# quantized by llama.cpp's quantizer (llama-quantize's `llama_model_quantize`) from the f32 GGUF: its ftype names
QUANTIZED = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
             "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0"}
OUTTYPES = (*CONVERTED, *QUANTIZED)
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",  # the tests talk plain HTTP to 127.0.0.1
    "-DLLAMA_BUILD_UI=OFF",  # no npm build of the web UI ...
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # ... and no download of a prebuilt one from the HF hub at build time
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary that survives the build tree being removed
)


class BuildError(RuntimeError):
    """A step of the build failed; the message is one line."""


def cache_dir() -> Path:
    base = os.environ.get("SAMPLECLI_CACHE") or os.path.join("~", ".cache", "samplecli")
    return Path(base).expanduser().resolve() / f"llama.cpp-{VERSION}"


def log(message: str) -> None:
    print(f"[llama_cpp] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Hold an exclusive lock on cache_dir()/<name>.lock (released on exit, or when the process dies)."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _one_line(text: str, limit: int = 400) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    tail = lines[-1] if lines else ""
    return tail[:limit]


# --- the source -------------------------------------------------------------------------------------------------


def _sdist_from_pip(dest: Path) -> Path:
    """Let pip fetch the sdist: it honours pip's index configuration (mirrors, proxies, certificates)."""
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
           f"{PACKAGE}=={VERSION}", "-d", str(dest)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob("llama_cpp_python-*.tar.gz"))
    if result.returncode != 0 or not found:
        raise BuildError(f"pip download failed: {_one_line(result.stderr or result.stdout)}")
    return found[0]


def _sdist_from_pypi_json(dest: Path) -> Path:
    """Fallback: the file PyPI's JSON API lists for the release, checked against its sha256."""
    index = f"https://pypi.org/pypi/{PACKAGE}/json"
    with urllib.request.urlopen(index, timeout=60) as response:
        releases = json.load(response)["releases"]
    sdists = [u for u in releases.get(VERSION, []) if u["packagetype"] == "sdist"]
    if not sdists:
        raise BuildError(f"PyPI lists no sdist for {PACKAGE}=={VERSION}")
    entry = sdists[0]
    target = dest / entry["filename"]
    digest = hashlib.sha256()
    url = urllib.parse.urljoin(index, entry["url"])  # a mirror may answer with relative URLs
    with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    expected = entry.get("digests", {}).get("sha256")
    if expected and digest.hexdigest() != expected:
        raise BuildError(f"sha256 mismatch for {entry['filename']}: got {digest.hexdigest()}, PyPI says {expected}")
    return target


def download_sdist(dest: Path) -> Path:
    """The sdist tarball: $SAMPLECLI_LLAMA_SDIST if set (an already downloaded file), else from the index."""
    local = os.environ.get("SAMPLECLI_LLAMA_SDIST")
    if local:
        if not Path(local).is_file():
            raise BuildError(f"SAMPLECLI_LLAMA_SDIST={local} is not a file")
        return Path(local)
    log(f"downloading the {PACKAGE}=={VERSION} sdist (pip download)")
    try:
        return _sdist_from_pip(dest)
    except BuildError as pip_exc:
        log(f"{pip_exc}; trying PyPI's JSON API")
        try:
            return _sdist_from_pypi_json(dest)
        except Exception as exc:  # network, HTTP status, JSON shape, checksum
            raise BuildError(f"could not download {PACKAGE}=={VERSION}: {pip_exc}; PyPI JSON API: {exc}") from None


def source_dir() -> Path:
    """The vendored llama.cpp source tree (downloaded and extracted on first use)."""
    src = cache_dir() / "src"
    if (src / "CMakeLists.txt").is_file():
        return src
    with locked("src"):
        if (src / "CMakeLists.txt").is_file():
            return src
        with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="src-tmp-") as tmp:
            tarball = download_sdist(Path(tmp))
            prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
            log(f"extracting {prefix} from {tarball.name}")
            try:
                with tarfile.open(tarball) as tar:
                    members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
                    if not members:
                        raise BuildError(f"{tarball.name} has no {prefix}")
                    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.11.4
                    tar.extractall(Path(tmp) / "x", members=members, **safe)
            except (tarfile.TarError, OSError) as exc:
                raise BuildError(f"could not extract {tarball}: {exc}") from None
            if src.exists():  # a leftover without CMakeLists.txt: incomplete, replace it
                shutil.rmtree(src)
            os.replace(Path(tmp) / "x" / prefix, src)
    return src


# --- the server -------------------------------------------------------------------------------------------------


def _run_logged(cmd: list[str], log_path: Path, what: str, cwd: Path | None = None) -> None:
    with open(log_path, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    if result.returncode != 0:
        tail = log_path.read_text(errors="replace")
        raise BuildError(f"{what} failed (exit {result.returncode}): {_one_line(tail)} -- full log: {log_path}")


def server_binary() -> Path:
    """The path of a built llama-server, building it (a few minutes) only if it is not cached."""
    binary = cache_dir() / "bin" / "llama-server"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise BuildError(f"`{tool}` is not on PATH: building llama-server needs cmake and a C++ compiler")
    src = source_dir()
    with locked("build"):
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
        build = cache_dir() / "build"
        log_path = cache_dir() / "build.log"
        log_path.write_text("")
        jobs = str(os.cpu_count() or 2)
        log(f"building llama-server in {build} with {jobs} jobs (several minutes; log: {log_path})")
        start = time.monotonic()
        _run_logged(["cmake", "-S", str(src), "-B", str(build), *CMAKE_FLAGS], log_path, "cmake configure")
        _run_logged(["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs], log_path,
                    "cmake build")
        built = build / "bin" / "llama-server"
        if not built.is_file():
            raise BuildError(f"the build finished but {built} does not exist -- full log: {log_path}")
        binary.parent.mkdir(parents=True, exist_ok=True)
        tmp = binary.with_name(f".llama-server.{os.getpid()}.tmp")
        shutil.copy2(built, tmp)
        os.replace(tmp, binary)
        log(f"built {binary} in {time.monotonic() - start:.0f} s")
    return binary


# --- the model --------------------------------------------------------------------------------------------------


def model_hash(model_dir: Path) -> str:
    """sha256 over the directory's files (relative names and contents), so any edit makes a new GGUF."""
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(model_dir)).encode() + b"\0")
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _prepare_copy(model_dir: Path, dest: Path) -> Path:
    """A copy of the model directory whose GPT-2 config.json has the `n_ctx` the converter reads."""
    copy = dest / model_dir.name
    shutil.copytree(model_dir, copy)
    config_path = copy / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("model_type") == "gpt2" and "n_ctx" not in config:
        config["n_ctx"] = config["n_positions"]
        config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return copy


def gguf_model(model_dir: str | Path | None = None, outtype: str = "f32") -> Path:
    """The model directory (default: the bundled model) converted to GGUF, converting only if not cached."""
    if outtype not in OUTTYPES:
        raise BuildError(f"--outtype has to be one of {', '.join(OUTTYPES)}, not {outtype!r}")
    model_dir = Path(model_dir or BUNDLED_MODEL).resolve()
    if not (model_dir / "config.json").is_file():
        raise BuildError(f"{model_dir} has no config.json: not a Hugging Face model directory")
    name = model_dir.name.replace(" ", "_")
    target = cache_dir() / "gguf" / f"{name}-{model_hash(model_dir)}-{outtype}.gguf"
    if target.is_file():
        return target
    if outtype in QUANTIZED:
        return _quantized(gguf_model(model_dir, "f32"), target, outtype)
    src = source_dir()
    with locked("gguf"):
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="gguf-tmp-") as tmp:
            copy = _prepare_copy(model_dir, Path(tmp))
            out = Path(tmp) / "model.gguf"
            log(f"converting {model_dir} to {outtype} GGUF")
            cmd = [sys.executable, str(Path(__file__).resolve()), "_convert", str(src), str(copy), str(out), outtype]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0 or not out.is_file():
                raise BuildError(f"converting {model_dir} failed: {_one_line(result.stderr or result.stdout)}")
            os.replace(out, target)
    return target


def _quantized(source: Path, target: Path, outtype: str) -> Path:
    """`source` (an f32 GGUF) quantized to `outtype` at `target` by llama.cpp's own quantizer, in a child process
    (it logs every tensor to stderr), unless it is cached."""
    with locked("gguf"):
        if target.is_file():
            return target
        with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="gguf-tmp-") as tmp:
            out = Path(tmp) / "model.gguf"
            log(f"quantizing {source.name} to {outtype}")
            cmd = [sys.executable, str(Path(__file__).resolve()), "_quantize", str(source), str(out), outtype]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0 or not out.is_file():
                raise BuildError(f"quantizing {source} to {outtype} failed: "
                                 f"{_one_line(result.stderr or result.stdout)}")
            os.replace(out, target)
    return target


def _quantize(source: str, outfile: str, outtype: str) -> None:
    """llama.cpp's `llama_model_quantize` (what `llama-quantize` runs), through llama-cpp-python."""
    import ctypes  # noqa: PLC0415

    import llama_cpp  # noqa: PLC0415 -- only this child process needs it

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTIZED[outtype])
    params.nthread = max(1, min(4, os.cpu_count() or 1))
    status = llama_cpp.llama_model_quantize(source.encode(), outfile.encode(), ctypes.byref(params))
    if status != 0:
        raise SystemExit(f"llama_model_quantize returned {status}")


def _gpt2_pre_tokenizer(model_dir: Path) -> bool:
    """Whether tokenizer.json pre-tokenizes exactly as GPT-2 does (byte-level, GPT-2 regex, no prefix space)."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return False
    tokenizer = json.loads(path.read_text(encoding="utf-8"))
    pre = tokenizer.get("pre_tokenizer") or {}
    return (tokenizer.get("normalizer") is None and pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
            and not pre.get("add_prefix_space", False))


def _convert(src: str, model_dir: str, outfile: str, outtype: str) -> None:
    """Run the vendored convert_hf_to_gguf.py in this process, teaching it that a byte-level BPE tokenizer with
    GPT-2's pre-tokenizer whose hash is not in its table (any tokenizer trained afresh) is `gpt-2`."""
    sys.path[:0] = [str(Path(src) / "gguf-py"), src]
    import convert_hf_to_gguf  # noqa: PLC0415 -- the vendored converter, found through sys.path above
    from conversion.base import TextModel  # noqa: PLC0415

    original = TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            if _gpt2_pre_tokenizer(Path(self.dir_model)):
                return "gpt-2"
            raise

    TextModel.get_vocab_base_pre = get_vocab_base_pre
    sys.argv = ["convert_hf_to_gguf.py", model_dir, "--outfile", outfile, "--outtype", outtype]
    convert_hf_to_gguf.main()


# --- serving ----------------------------------------------------------------------------------------------------


@dataclass
class Served:
    """A llama-server that `serve` started: its address, what it serves, its process, command line and log."""

    url: str
    gguf: Path
    process: subprocess.Popen
    log_path: Path
    args: list[str] = field(default_factory=list)

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(port: int | None = None, *, binary: Path | None = None, gguf: Path | None = None, n_parallel: int = 4,
          ctx_per_slot: int = 256, threads: int = 1, extra_args: tuple[str, ...] = (), log_dir: Path | None = None,
          timeout: float = 120.0, kind: type[Served] = Served) -> Served:
    """llama-server on 127.0.0.1:`port` (None: a free port, tried again on a new one where another process took
    it first), serving `gguf` (the bundled model's, built and cached here) in `n_parallel` slots of
    `ctx_per_slot` tokens with `threads` threads; returned (as a `kind`) once GET /health answers 200. A server
    that exits or does not become ready is a RuntimeError with its command line and its log."""
    binary = Path(binary or server_binary())
    gguf = Path(gguf or gguf_model())
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="llama-server-"))
    for _attempt in range(1 if port is not None else 3):
        chosen = port if port is not None else free_port()
        args = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(chosen), "-np", str(n_parallel),
                "--ctx-size", str(n_parallel * ctx_per_slot), "-t", str(threads), "--no-webui", *extra_args]
        log_path = log_dir / f"llama-server-{chosen}.log"
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        server = kind(f"http://127.0.0.1:{chosen}", gguf, process, log_path, args)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(server.url + "/health", timeout=2) as answer:
                    if answer.status == 200:
                        return server
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.1)
        if process.poll() is None:
            server.stop()
            raise RuntimeError(f"llama-server did not answer GET /health with 200 within {timeout:.0f} s: "
                               f"{' '.join(args)}\n--- log ---\n{server.log()}")
        if "couldn't bind" not in server.log():
            break
    raise RuntimeError(f"llama-server exited with {process.returncode} before it was ready: {' '.join(args)}\n"
                       f"--- log ---\n{server.log()}")


# --- command line -----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_convert"]:  # internal: the converter, run in a child process
        _convert(*argv[1:])
        return 0
    if argv[:1] == ["_quantize"]:  # internal: the quantizer, run in a child process
        _quantize(*argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("server", help="print the path of a built llama-server (building it if needed)")
    sub.add_parser("source", help="print the vendored llama.cpp source directory (downloading it if needed)")
    gguf = sub.add_parser("gguf", help="print the path of the model converted to GGUF (converting if needed)")
    gguf.add_argument("--outtype", choices=OUTTYPES, default="f32")
    gguf.add_argument("--model", default=None, help="a Hugging Face model directory (default: the bundled model)")
    args = parser.parse_args(argv)
    try:
        if args.command == "server":
            print(server_binary())
        elif args.command == "source":
            print(source_dir())
        else:
            print(gguf_model(args.model, args.outtype))
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
