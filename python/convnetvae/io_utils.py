"""Small I/O helpers shared by every module that writes files."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: str, dest: Path) -> None:
    """Give the temporary file normal permissions (mkstemp makes it 0600) and rename it."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, dest)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file next to ``path`` and rename it onto ``path`` on success.

    A crash or exception during the write leaves any previous file at ``path`` intact and
    removes the temporary file.

    Parameters
    ----------
    path
        Destination file.
    mode
        ``"wb"`` or ``"w"``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_path(path: str | os.PathLike) -> contextlib.AbstractContextManager[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    For writers that want a file name rather than a handle (``AnnData.write_h5ad``,
    ``matplotlib.savefig``, ``safetensors.torch.save_file``).
    """

    @contextlib.contextmanager
    def _cm() -> Iterator[Path]:
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=dest.suffix, dir=dest.parent)
        os.close(fd)
        try:
            yield Path(tmp)
            _publish(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    return _cm()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=_json_default)
        fh.write("\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ---------------------------------------------------------------------------- directories
#: name tags of the sibling directories an atomic directory write uses (``.<name>.tmp-XXXX``)
TMP_TAG, OLD_TAG = ".tmp-", ".old-"


def _fsync_path(path: Path) -> None:
    """Flush a file or directory entry to disk (ignored where the system cannot)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    import ctypes
    import errno

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def stale_siblings(dest: str | os.PathLike) -> list[Path]:
    """Temporary directories a killed :func:`atomic_directory` write left beside ``dest``."""
    dest = Path(dest)
    if not dest.parent.is_dir():
        return []
    return [p for tag in (TMP_TAG, OLD_TAG)
            for p in dest.parent.glob(f".{glob.escape(dest.name)}{tag}*") if p.is_dir()]


def _swap_into_place(tmp: Path, dest: Path) -> None:
    """Make the complete directory ``tmp`` appear at ``dest`` in one step; ``tmp`` is consumed."""
    import shutil

    if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())):
        os.replace(tmp, dest)  # replaces an empty directory too
    elif _exchange(tmp, dest):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old contents
    else:  # no atomic exchange here: a kill between the two renames leaves the old one beside
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}{OLD_TAG}", dir=dest.parent))
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_path(dest.parent)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty sibling temporary directory; on success it replaces ``path`` in one step.

    After any crash or kill, ``path`` holds its complete old contents or the complete new ones.
    An exception in the block removes the temporary directory and leaves ``path`` as it was.
    Temporary directories left beside ``path`` by killed writes are removed first.
    """
    import shutil

    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in stale_siblings(dest):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}{TMP_TAG}", dir=dest.parent))
    try:
        yield tmp
        for f in tmp.iterdir():
            _fsync_path(f)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700
        _fsync_path(tmp)
        _swap_into_place(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------- before the work
def _nearest_existing(p: Path) -> Path:
    p = p.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable(path: str | os.PathLike, what: str, kind: str = "file",
                   expected_bytes: int = 0) -> Path:
    """Check, before any work, that ``path`` can be written; raise a one-line error if not.

    Parameters
    ----------
    path
        The output: a file, or a directory (``kind="dir"``) that will be replaced as a whole.
    what
        What it is, for messages (``"--out"``, ``"model.dir"``).
    kind
        ``"file"`` or ``"dir"``.
    expected_bytes
        About how much will be written: checked against the free space and ``ulimit -f``.

    A temporary probe file is written (and removed) where the output will go, so a read-only
    file system, missing permissions or a full disk are caught now rather than after the work.
    """
    from .errors import ConvNetVAEError

    p = Path(path)
    if kind == "dir" and p.exists() and not p.is_dir():
        raise ConvNetVAEError(f"{what} {str(p)!r} is a file, not a directory")
    if kind == "file" and p.is_dir():
        raise ConvNetVAEError(f"{what} {str(p)!r} is a directory; give a file name")
    base = _nearest_existing(p.parent)
    if not base.is_dir():
        raise ConvNetVAEError(f"{what} {str(p)!r} cannot be created: {str(base)!r} is a file, "
                              "not a directory")
    _check_space(base, what, p, expected_bytes)
    try:
        fd, probe = tempfile.mkstemp(prefix=".convnetvae-probe.", dir=base)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        raise ConvNetVAEError(f"{what} {str(p)!r} is not writable ({err.strerror} in "
                              f"{str(base)!r}); choose another location") from None
    return p


def _check_space(base: Path, what: str, p: Path, expected_bytes: int) -> None:
    import resource

    from .errors import ConvNetVAEError

    if expected_bytes <= 0:
        return
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY and soft < expected_bytes:
        raise ConvNetVAEError(f"{what} {str(p)!r}: the file size limit (ulimit -f: {soft} bytes) "
                              f"is below the about {expected_bytes} bytes to write")
    st = os.statvfs(base)
    free = st.f_bavail * st.f_frsize
    if free < expected_bytes:
        raise ConvNetVAEError(f"{what} {str(p)!r}: only {free} bytes free on that disk, about "
                              f"{expected_bytes} needed")
