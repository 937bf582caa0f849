"""Output files and folders, written whole or not at all.

- ``atomic_write(path, writer)``: the writer fills a temporary file in the target's folder, which is then
  renamed over the target, so an interrupted run never leaves a half-written file. The new file gets the
  mode a plain ``open()`` would give it (0666 less the umask: 0644 under umask 022), or keeps the mode of
  the file it replaces. A symlink is written through (its target is replaced, the link stays); a device
  node, FIFO or other non-regular file is written into, never replaced.
- ``atomic_dir(path, ours)``: a context manager yielding a temporary folder next to ``path``; on success it
  takes the place of ``path`` (which must be absent, empty, or hold only files this package writes there), so
  an interrupted ``--out`` never leaves files from two runs side by side. ``ours`` names those files by their
  path inside the folder (``figures/pareto.png``): a subfolder may hold only the files listed under it, since
  the whole subfolder is replaced.
- ``check_out_dir(path, ours)``: the same refusals, up front (before a long run).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .errors import SimulatorError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_file_mode(target: Path) -> int:
    try:
        st = target.stat()
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    except OSError:
        pass
    return 0o666 & ~_umask()


def atomic_write(path: str | Path, writer: Callable[[str], None]) -> Path:
    """Call ``writer(tmp_path)`` then move the result to ``path`` (see the module docstring)."""
    path = Path(path)
    try:
        st = os.stat(path)  # follows symlinks
    except OSError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise SimulatorError(f"{path}: is a folder, expected a file name")
    special = st is not None and not stat.S_ISREG(st.st_mode)  # device node, FIFO, pipe behind /dev/stdout
    target = path if special else (Path(os.path.realpath(path)) if path.is_symlink() else path)
    parent = target.parent
    if not special and not parent.is_dir():
        raise SimulatorError(f"{path}: folder {parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix,
                                   dir=None if special else parent)
    except OSError as exc:  # named by the user's path, not the temporary file's
        raise SimulatorError(f"{path}: cannot write ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        writer(tmp)
        if special:  # a device node or FIFO: write into it, never replace it
            with open(tmp, "rb") as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.unlink(tmp)
        else:
            os.chmod(tmp, _new_file_mode(target))
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


OS_LITTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})  # files a desktop drops into any folder it shows


def _foreign(folder: Path, ours: set[str], prefix: str = "") -> list[str]:
    """The paths (relative to the output folder) under ``folder`` that are not ours: a file ``ours`` does not
    list, a folder no listed file lies in, a listed file name that is a folder. Desktop litter and this
    module's own temporary folders (``.quadrant-*``, at the top) do not count."""
    out = []
    for p in sorted(folder.iterdir()):
        rel = prefix + p.name
        if p.name in OS_LITTER or (not prefix and p.name.startswith(".quadrant-")):
            continue
        if p.is_dir() and any(o.startswith(rel + "/") for o in ours):
            out += _foreign(p, ours, rel + "/")
        elif rel not in ours or p.is_dir():
            out.append(rel + "/" if p.is_dir() else rel)  # (a folder named like one of our files reads as a folder)
    return out


def check_out_dir(path: str | Path, ours: Iterable[str] = ()) -> None:
    """Refuse (SimulatorError) an output folder ``atomic_dir`` would not take: an existing path that is not a
    folder, a folder holding anything but the files named in ``ours`` (paths inside the folder, such as
    ``figures/pareto.png``: a subfolder holding any other file is refused too), or a missing parent folder.
    Commands call it before their work, so a long run does not end in a refusal."""
    path = Path(path)
    ours = set(ours)
    if path.exists():
        if not path.is_dir():
            raise SimulatorError(f"{path}: exists and is not a folder")
        if Path.cwd().resolve().is_relative_to(path.resolve()):
            raise SimulatorError(f"{path}: is the current folder (or holds it), which a run cannot replace; give "
                                 "another folder")
        foreign = _foreign(path, ours)
        if foreign:
            raise SimulatorError(f"{path}: folder holds files or folders this run would not write "
                                 f"({', '.join(foreign[:3])}"
                                 f"{', ...' if len(foreign) > 3 else ''}); choose a new or empty folder")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise SimulatorError(f"{path}: folder {parent} does not exist (create it first)")


@contextlib.contextmanager
def atomic_dir(path: str | Path, ours: Iterable[str] = ()) -> Iterator[Path]:
    """Yield a temporary folder; on a clean exit it replaces ``path`` (see the module docstring).

    ``ours``: paths (inside ``path``) of the files this package writes there; an existing ``path`` holding
    anything else, at its top or in a subfolder, is refused (SimulatorError) before anything is written, so user
    files are never deleted."""
    path = Path(path)
    check_out_dir(path, ours)
    parent = path.parent if str(path.parent) else Path(".")
    tmp = Path(tempfile.mkdtemp(prefix=f".quadrant-{path.name}.", dir=parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".quadrant-{path.name}.old.", dir=parent))
            os.rmdir(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
