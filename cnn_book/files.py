"""Files that arrive whole or not at all: the cache, downloads that end, writes that cannot be half done.

- ``cache_dir()``: the per-user cache (``$CNN_BOOK_CACHE``, else ``$XDG_CACHE_HOME/cnn_book``, else
  ``~/.cache/cnn_book``); ``DataError``: a data file is missing or damaged, in the reader's words.
- ``atomic_write(path)``: a temporary file beside ``path``, renamed over it only once it is complete,
  so a reader (or another process filling the same cache) sees the old file or the new one.
- ``download(url, dst, ...)``: ``torch.hub.download_url_to_file`` (its hash check) with what it lacks:
  a timeout on every read (``CNN_BOOK_TIMEOUT`` seconds, 30 by default, as pip's and the Hugging
  Face Hub's), SIGTERM cleaned up like Ctrl-C, messages that say what to do offline.
- ``staged(root, what, fetch)``: the same for a library's own download (torchvision's data sets).

A run killed outright (SIGKILL) cannot clean up: its temporary files and folders carry its process
id, and the next write to the same place removes those of processes that are gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.error import URLError

__all__ = ["DataError", "DownloadError", "cache_dir", "atomic_write", "download", "staged", "sha256", "timeout",
           "network_timeout", "interruptible", "remove_stale"]


class NotedError(RuntimeError):
    """An error with two texts: the message (which file, which address, what to do: for whoever
    fixes it) and ``note``, one short sentence for a page of the book, with no address or path."""

    def __init__(self, message: str, note: str | None = None) -> None:
        super().__init__(message)
        self.note = note or message


class DataError(NotedError):
    """A data file is missing, truncated or corrupt; the message says which and what to do."""


class DownloadError(OSError):
    """A download failed or timed out; the message says what to do offline."""


def cache_dir() -> Path:
    """The per-user cache: ``$CNN_BOOK_CACHE``, else ``$XDG_CACHE_HOME/cnn_book``, else ``~/.cache/cnn_book``."""
    if os.environ.get("CNN_BOOK_CACHE"):
        return Path(os.environ["CNN_BOOK_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnn_book"


def sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


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
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """``with atomic_write(path, "w") as f: f.write(...)``: ``f`` is a temporary file in ``path``'s
    folder, ``.<name>.<pid>.<random>.part`` (a name no other process or thread shares); it replaces
    ``path`` when the block ends without an error, and is removed when it raises (Ctrl-C, a full
    disk). The file is readable by all, as an ordinary file would be (a classroom's shared cache)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, f".{path.name}.")  # what a killed writer left
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".part")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)  # atomic on one file system
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def timeout() -> float:
    """Seconds a network read may wait: ``CNN_BOOK_TIMEOUT``, else 30."""
    value = os.environ.get("CNN_BOOK_TIMEOUT", "30")
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"CNN_BOOK_TIMEOUT must be a number of seconds, got {value!r}") from None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"CNN_BOOK_TIMEOUT must be a positive, finite number of seconds, got {value!r}")
    return seconds


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
    (``torch.hub``, torchvision's data sets), and restored afterwards."""
    old = socket.getdefaulttimeout()
    seconds = timeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield seconds
    finally:
        socket.setdefaulttimeout(old)


def is_timeout(err: BaseException | None) -> bool:
    reason = getattr(err, "reason", None)
    return isinstance(err, TimeoutError | socket.timeout) or isinstance(reason, TimeoutError | socket.timeout)


@contextlib.contextmanager
def _staging(folder: Path, prefix: str) -> Iterator[Path]:
    """A fresh folder ``folder/<prefix><pid>-...``, removed when the block ends, however it ends."""
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale(folder, prefix)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=f"{prefix}{os.getpid()}-", suffix=".part"))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download(url: str, dst: str | os.PathLike, *, what: str, offline_hint: str,
             sha256_prefix: str | None = None) -> Path:
    """Fetch ``url`` into ``dst`` with ``torch.hub.download_url_to_file`` (which checks that the
    file's SHA-256 starts with ``sha256_prefix``, the hash torchvision's file names carry), inside a
    staging folder ``.<name>.<pid>-....part`` beside ``dst``; ``dst`` appears only once complete and
    checked. ``what`` names the file in messages; ``offline_hint`` says how to do without the network."""
    import torch.hub

    dst = Path(dst)
    try:
        with interruptible(), network_timeout() as seconds, _staging(dst.parent, f".{dst.name}.") as staging:
            try:
                part = staging / dst.name
                torch.hub.download_url_to_file(url, str(part), hash_prefix=sha256_prefix, progress=False)
                os.replace(part, dst)
            except RuntimeError as e:  # torch.hub's hash check
                if "invalid hash value" not in str(e):
                    raise
                raise DownloadError(f"The download of {what} from {url} is corrupt: its SHA-256 does not start "
                                    f"with {sha256_prefix}. Try again; {offline_hint}") from None
    except (URLError, OSError) as err:
        if isinstance(err, DownloadError):
            raise
        if is_timeout(err):
            raise DownloadError(f"No answer from {url} within {seconds:g} s while downloading {what} "
                                f"(CNN_BOOK_TIMEOUT sets the limit). {offline_hint}") from None
        reason = getattr(err, "reason", None) or err
        raise DownloadError(f"Could not download {what} from {url} ({reason}). {offline_hint}") from None
    return dst


def staged(root: Path, what: str, fetch: Callable[[Path], None], move: str | None = None) -> None:
    """``fetch(staging)`` downloads into a fresh folder in ``root`` (a library's own download, with a
    timeout on every read; Ctrl-C and SIGTERM clean it up, and a killed run's folder goes at the next
    call); ``move``, if given, is the folder renamed into ``root`` once complete, so ``root`` never
    holds half of it. A read that times out is a ``DataError`` naming ``what``."""
    with network_timeout() as seconds, interruptible(), _staging(root, ".download-") as staging:
        try:
            fetch(staging)
        except (RuntimeError, OSError) as e:
            if is_timeout(e) or is_timeout(e.__context__):
                raise DataError(f"No answer from the server within {seconds:g} s while downloading {what} "
                                f"(CNN_BOOK_TIMEOUT sets the limit). Offline, see cnn_book.data's "
                                f"docstring for where the files can come from.") from None
            raise
        if move is not None:
            target = root / move
            if target.exists():
                shutil.rmtree(target)  # an incomplete copy from before: replaced by the complete one
            os.replace(staging / move, target)
