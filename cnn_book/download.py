"""Downloads that end, and leave nothing half-written behind.

Every network read has a timeout (``CNN_BOOK_TIMEOUT`` seconds, 30 by default), as pip's and the
Hugging Face Hub's have. A file is written to a temporary name in its target folder and renamed
into place only once it is complete and its hash checked, so a reader sees the whole file or none.
Ctrl-C and SIGTERM remove the temporary file; a run killed outright (SIGKILL) cannot, so the next
download of the same file removes what a dead process left.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.error import URLError


class DownloadError(OSError):
    """A download failed or timed out; the message says what to do offline."""


def sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def timeout() -> float:
    """Seconds a network read may wait: ``CNN_BOOK_TIMEOUT``, else 30."""
    value = os.environ.get("CNN_BOOK_TIMEOUT", "30")
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"CNN_BOOK_TIMEOUT must be a number of seconds, got {value!r}") from None
    if seconds <= 0:
        raise ValueError(f"CNN_BOOK_TIMEOUT must be positive, got {value!r}")
    return seconds


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale(folder: Path, prefix: str) -> None:
    """Remove ``folder/<prefix><pid>...`` files and folders whose process is gone (a killed run's)."""
    if not folder.is_dir():
        return
    pattern = re.compile(re.escape(prefix) + r"(\d+)")
    for p in folder.iterdir():
        m = pattern.match(p.name)
        if m and not _alive(int(m.group(1))):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM raises ``KeyboardInterrupt`` inside the block, so that its clean-up runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def network_timeout() -> Iterator[float]:
    """The default socket timeout set to ``timeout()`` for libraries that download without one
    (torchvision's data sets), and restored afterwards."""
    old = socket.getdefaulttimeout()
    seconds = timeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield seconds
    finally:
        socket.setdefaulttimeout(old)


def is_timeout(err: BaseException) -> bool:
    reason = getattr(err, "reason", None)
    return isinstance(err, TimeoutError | socket.timeout) or isinstance(reason, TimeoutError | socket.timeout)


def download(url: str, dst: Path, *, what: str, offline_hint: str, sha256_prefix: str | None = None) -> Path:
    """Fetch ``url`` into ``dst`` through ``.<name>.<pid>.part`` in the same folder; return ``dst``.

    ``sha256_prefix``: the start of the SHA-256 the file must have (torchvision's file names carry
    one). ``what`` names the file for messages; ``offline_hint`` says how to do without the network.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{dst.name}."
    remove_stale(dst.parent, prefix)
    tmp = dst.parent / f"{prefix}{os.getpid()}.part"
    h = hashlib.sha256()
    seconds = timeout()
    try:
        with interruptible(), urllib.request.urlopen(url, timeout=seconds) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                h.update(chunk)
                f.write(chunk)
        if sha256_prefix and not h.hexdigest().startswith(sha256_prefix):
            raise DownloadError(f"The download of {what} from {url} is corrupt: its SHA-256 starts with "
                                f"{h.hexdigest()[:len(sha256_prefix)]}, not {sha256_prefix}. Try again; "
                                f"{offline_hint}")
        os.replace(tmp, dst)
    except (URLError, OSError) as err:
        if isinstance(err, DownloadError):
            raise
        if is_timeout(err):
            raise DownloadError(f"No answer from {url} within {seconds:g} s while downloading {what} "
                                f"(CNN_BOOK_TIMEOUT sets the limit). {offline_hint}") from None
        reason = getattr(err, "reason", None) or err
        raise DownloadError(f"Could not download {what} from {url} ({reason}). {offline_hint}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dst
