"""``manifest.toml``: reading, atomic writing, TOML conversion and provenance.

Guarantees of :func:`write_manifest`:

- The whole document is converted to TOML *before* any file is opened: a value
  TOML cannot hold raises ``TypeError`` naming its key path and leaves the disk
  untouched. There is never a half-written manifest.
- The text is published by the core's atomic writer (``_core.publish_bytes``, the
  one shared with the recorder's Parquet files): a dot-prefixed temp file in the
  target's folder (``.manifest.toml.tmp-...``, opened with ``O_EXCL``), fsynced,
  renamed over the target (:func:`create_manifest`: linked, never replacing), and
  the folder fsynced. A reader sees the old manifest or the new one, never a mix.
  Temp files never match ``*.toml`` and are swept by ``flightlog recover``.
  Failures are ``OSError`` subclasses by errno, naming the file.

Conversion of values TOML cannot hold (params, tags, units, ...):

============================  =================================================
``None`` in a table           the key is omitted (TOML has no null; read it back
                              with ``.get(key)``)
``None`` inside an array      ``TypeError`` (dropping it would shift the others)
numpy scalars / 0-d arrays    the Python scalar (``.item()``)
numpy arrays, array-likes     nested lists
tuples, lists, ranges         arrays
sets, frozensets              sorted arrays
mappings, dataclasses         tables (non-str keys: ints become strings)
``enum.Enum``                 its value
paths                         ``str``
``datetime``/``date``/``time``  TOML date-times, as given
other ``__index__``/``__float__`` objects   ``int``/``float``
anything else                 ``TypeError`` naming the key path
============================  =================================================
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import enum
import errno
import functools
import getpass
import os
import platform
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence, Set
from pathlib import Path, PurePath
from typing import Any

from .._errors import ManifestError
from .layout import MANIFEST_NAME as _MANIFEST_NAME

__all__ = [
    "MANIFEST_NAME",
    "ManifestError",
    "create_manifest",
    "fsync_dir",
    "git_info",
    "manifest_path",
    "process_start_ticks",
    "provenance",
    "read_manifest",
    "to_toml_table",
    "utc_now_iso",
    "write_manifest",
]

#: File name of a run folder's manifest.
MANIFEST_NAME = _MANIFEST_NAME


# --------------------------------------------------------------------------- conversion


class _Drop:
    """Marker: omit this key."""


_DROP = _Drop()


def _numpy() -> Any:
    # Only look at numpy if the program already imported it: a numpy value
    # cannot exist otherwise, and importing numpy costs ~100 ms.
    return sys.modules.get("numpy")


def _sort_key(value: Any) -> tuple[str, Any]:
    return (type(value).__name__, value if isinstance(value, (int, float, str)) else repr(value))


#: Types stored as they are: exact ``str``, ``int``, ``float`` and ``bool`` (subclasses,
#: enums among them, take the checks below). Most of a manifest: checked first.
_PLAIN = frozenset({str, int, float, bool})


def _convert(value: Any, where: str, *, in_array: bool = False) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is dict:
        return _convert_table(value, where)
    if kind is list or kind is tuple:
        return [_convert(v, f"{where}[{i}]", in_array=True) for i, v in enumerate(value)]
    if value is None:
        if in_array:
            raise TypeError(f"{where}: None inside an array cannot be stored in TOML (there is no null)")
        return _DROP
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and not isinstance(value, enum.Enum):
        return str(value)
    if isinstance(value, enum.Enum):
        return _convert(value.value, where, in_array=in_array)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value
    np = _numpy()
    if np is not None and isinstance(value, (np.generic, np.ndarray)):
        if isinstance(value, np.ndarray) and value.ndim > 0:
            return _convert(value.tolist(), where, in_array=in_array)
        if isinstance(value, np.floating) and value.dtype.itemsize < 8:
            return float(str(value))  # np.float32(0.1) -> 0.1, not 0.10000000149011612
        item = value.item()
        if isinstance(item, (bytes, np.generic)):
            raise TypeError(f"{where}: cannot store numpy {value.dtype} value {value!r} in a TOML manifest")
        return _convert(item, where, in_array=in_array)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return _convert_table(value, where)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _convert_table({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, where)
    if isinstance(value, (Set, frozenset)):
        items = [_convert(v, f"{where}[]", in_array=True) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=_sort_key)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{where}: cannot store bytes in a TOML manifest; decode or hex-encode them first")
    if isinstance(value, Sequence):
        return [_convert(v, f"{where}[{i}]", in_array=True) for i, v in enumerate(value)]
    if np is not None and hasattr(value, "__array__") and not hasattr(value, "__index__"):
        # JAX / torch / cupy arrays and scalars.
        with contextlib.suppress(Exception):
            return _convert(np.asarray(value), where, in_array=in_array)
    if hasattr(value, "__index__"):
        with contextlib.suppress(Exception):
            return int(value.__index__())
    if hasattr(value, "__float__"):
        with contextlib.suppress(Exception):
            return float(value)
    raise TypeError(
        f"{where}: cannot store a {type(value).__module__}.{type(value).__qualname__} in a TOML manifest; "
        "convert it to str, number, bool, list or dict first"
    )


def _key(key: Any, where: str) -> str:
    if isinstance(key, str):
        return str(key)
    if isinstance(key, enum.Enum):
        key = key.value
        if isinstance(key, str):
            return key
    if isinstance(key, int) or hasattr(key, "__index__"):
        return str(int(key.__index__()) if not isinstance(key, int) else int(key))
    raise TypeError(f"{where}: table keys must be str (or int), got {type(key).__name__} {key!r}")


def _convert_table(data: Mapping[Any, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = _key(k, where or "<manifest>")
        path = f"{where}.{key}" if where else key
        if key in out:
            raise TypeError(f"{path}: two keys of {where or '<manifest>'} become the same TOML key {key!r}")
        value = _convert(v, path)
        if value is not _DROP:
            out[key] = value
    return out


def to_toml_table(data: Mapping[Any, Any], where: str = "") -> dict[str, Any]:
    """Convert ``data`` into a dict that TOML can hold (see the module doc).

    ``where`` prefixes key paths in error messages (``"params"`` gives
    ``params.lr``).

    >>> to_toml_table({"lr": 0.1, "seed": None, "shape": (3, 4), "tags": {"b", "a"}})
    {'lr': 0.1, 'shape': [3, 4], 'tags': ['a', 'b']}

    Raises:
        TypeError: a value cannot be converted; the message names its key path.
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"{where or 'manifest'} must be a mapping, got {type(data).__name__}")
    return _convert_table(data, where)


# --------------------------------------------------------------------------- files


def manifest_path(path: str | os.PathLike[str]) -> Path:
    """The manifest file for ``path``: ``path/manifest.toml`` if ``path`` is a
    folder, else ``path`` itself."""
    p = Path(path)
    return p / MANIFEST_NAME if p.is_dir() else p


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a folder so that a rename or a new entry in it is durable.

    A no-op on Windows, which cannot open a folder as a file: NTFS journals
    renames itself (the weaker guarantee is in docs/PLATFORMS.md).
    """
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as e:  # some filesystems refuse fsync on folders
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


#: The TOML text of each top-level table last written, by key: ``(repr of the table,
#: text)``. A run writes its manifest at least twice (start, end) and a process often
#: runs many: the schema, provenance and params tables rarely change between writes,
#: and formatting them is most of a write's Python cost. Keyed by ``repr`` (never
#: ``==``, under which ``1``, ``1.0`` and ``True`` are one value).
_TABLE_TEXT: dict[str, tuple[str, str]] = {}


def _dumps(data: Mapping[str, Any]) -> bytes:
    import tomli_w

    table = to_toml_table(data)
    # A TOML document is its top-level keys that are not tables, then one section per
    # table: formatted apart, the same document as tomli_w.dumps(table).
    parts = [tomli_w.dumps({k: v for k, v in table.items() if not isinstance(v, dict)})]
    for key, value in table.items():
        if isinstance(value, dict):
            shape = repr(value)
            known = _TABLE_TEXT.get(key)
            if known is None or known[0] != shape:
                known = (shape, tomli_w.dumps({key: value}))
                _TABLE_TEXT[key] = known  # one assignment: safe to race, at worst formatted twice
            parts.append(known[1])
    return "\n".join(parts).encode("utf-8")


def _publish(
    target: Path,
    payload: bytes,
    *,
    create_only: bool,
    after: str | os.PathLike[str] | None = None,
    durable: bool = True,
) -> None:
    """Temp file, fsync, rename (or, ``create_only``, a link that cannot overwrite),
    folder fsync: the core's ``atomic_file::publish_bytes``, the one atomic writer.
    ``after``: a folder fsynced (at the same time as the temp file) before the rename.
    ``durable=False``: no fsync at all (the caller owes them)."""
    from .. import _core

    if after is not None:
        _core.publish_bytes(target, payload, create_only, after)
    elif durable:
        _core.publish_bytes(target, payload, create_only)
    else:
        _core.publish_bytes(target, payload, create_only, durable=False)


def write_manifest(
    path: str | os.PathLike[str],
    data: Mapping[str, Any],
    *,
    after: str | os.PathLike[str] | None = None,
    durable: bool = True,
) -> Path:
    """Write ``data`` as TOML to ``path`` atomically and durably; return the file path.

    ``path`` is the manifest file, or a run folder (then ``path/manifest.toml``);
    a path ending in ``.parquet`` raises ``ValueError`` (a data file is never replaced).
    Values are converted first (see the module doc), so a value TOML cannot hold
    raises ``TypeError`` before anything is written. ``after``: a folder whose fsync
    completes before the manifest's name is placed (a run's close: the names of the
    files the manifest lists become durable first; the two fsyncs run at once).
    ``durable=False``: placed the same way (whole or not at all for readers and for a
    process that dies) but not fsynced, nor is its folder: a power loss may take it back
    or leave it empty. The caller owes both fsyncs before anything that must not be
    durable without it (a run's start manifest: its recorder's ``_sync_first``).

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> p = write_manifest(d, {"run_id": "r1", "params": {"lr": 0.1, "seed": None}})
    >>> read_manifest(d)
    {'run_id': 'r1', 'params': {'lr': 0.1}}
    """
    target = manifest_path(path)
    if target.suffix.lower() == ".parquet":
        # The output file of FlightRecorder("x.parquet") is a natural thing to pass here; a
        # TOML document must never replace it.
        raise ValueError(
            f"{target} is a Parquet file, not a manifest: pass its folder ({target.parent}: "
            f"{MANIFEST_NAME} is written there) or a .toml path"
        )
    _publish(target, _dumps(data), create_only=False, after=after, durable=durable)
    return target


def create_manifest(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    """Like :func:`write_manifest`, but fail with ``FileExistsError`` if the file
    exists: the complete file appears at once (temp file, then a hard link that
    cannot overwrite), so it can claim a name (dev/tuner run ids)."""
    target = manifest_path(path)
    if os.path.lexists(target):  # cheap early answer; the link below is what decides
        raise FileExistsError(errno.EEXIST, "manifest exists", str(target))
    _publish(target, _dumps(data), create_only=True)
    return target


def read_manifest(path_or_run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a manifest: a ``manifest.toml`` file (or any TOML file), or a run folder.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = write_manifest(d, {"status": "running"})
    >>> read_manifest(d)["status"]
    'running'

    Raises:
        FileNotFoundError: there is no manifest there.
        OSError: it is not a regular file (``NotRegularFileError``: a FIFO, device, ...).
        ManifestError: the file is empty or not valid TOML (the message names the file).
    """
    from .._regular import read_bytes

    target = manifest_path(path_or_run_dir)
    raw = read_bytes(target)  # a FIFO or device is refused (NotRegularFileError), never waited on
    return parse_manifest(raw, str(target))


def parse_manifest(raw: bytes, where: str) -> dict[str, Any]:
    """Parse manifest bytes read from ``where`` (a path or URL, for messages).

    Raises:
        ManifestError: empty, not UTF-8 or not valid TOML.
    """
    if not raw.strip():
        raise ManifestError(f"manifest {where} is empty")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ManifestError(f"manifest {where} is not UTF-8 text: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ManifestError(f"manifest {where} is not valid TOML: {e}") from None


def dumps_manifest(data: Mapping[str, Any]) -> bytes:
    """``data`` as manifest TOML bytes (values converted; ``TypeError`` for what TOML cannot hold)."""
    return _dumps(data)


def utc_now_iso() -> str:
    """Now, as a UTC ISO 8601 string with milliseconds: ``2025-10-20T15:30:45.123Z``."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- provenance


def process_start_ticks(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux), else ``None``
    (no ``/proc`` on macOS or Windows: a reused pid is then not detected).

    Together with the pid and :func:`boot_id` it identifies a process even after
    its pid is reused.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


@functools.cache
def _own_start_ticks(pid: int) -> int | None:
    """:func:`process_start_ticks` of this process, read once per pid (a forked child
    has its own)."""
    return process_start_ticks(pid)


@functools.cache
def boot_id() -> str | None:
    """This boot's id (Linux ``/proc/sys/kernel/random/boot_id``), else ``None``."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def _flightlog_version() -> str:
    pkg = sys.modules.get("flightlog")
    version = getattr(pkg, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        from importlib.metadata import version as dist_version

        return dist_version("flightlog")
    except Exception:
        return "unknown"


def _numpy_version() -> str | None:
    np = _numpy()
    if np is not None and isinstance(getattr(np, "__version__", None), str):
        return str(np.__version__)
    try:
        from importlib.metadata import version as dist_version

        return dist_version("numpy")
    except Exception:
        return None


@functools.cache
def _static_provenance() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "user": _user(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "flightlog_version": _flightlog_version(),
        "numpy_version": _numpy_version(),
        "boot_id": boot_id(),
    }


@functools.cache
def _find_git_dir(start: str) -> tuple[str, str] | None:
    """(work tree, git dir) of the repository containing ``start``, or None."""
    d = Path(start)
    for cand in (d, *d.parents):
        dotgit = cand / ".git"
        try:
            if dotgit.is_dir():
                return str(cand), str(dotgit)
            if dotgit.is_file():
                text = dotgit.read_text(encoding="utf-8", errors="replace").strip()
                if text.startswith("gitdir:"):
                    gitdir = Path(text[len("gitdir:") :].strip())
                    if not gitdir.is_absolute():
                        gitdir = cand / gitdir
                    return str(cand), str(gitdir)
        except OSError:
            return None
    return None


def _read_ref(git_dir: Path, common_dir: Path, ref: str, consulted: list[Path]) -> str | None:
    """The commit ``ref`` names; the files that may decide it are added to ``consulted``."""
    consulted.append(common_dir / "packed-refs")
    for _ in range(5):  # symbolic refs may chain
        value = None
        consulted.extend((git_dir / ref, common_dir / ref))
        for base in (git_dir, common_dir):
            with contextlib.suppress(OSError):
                value = (base / ref).read_text(encoding="utf-8").strip()
                break
        if value is None:
            with contextlib.suppress(OSError), open(common_dir / "packed-refs", encoding="utf-8") as f:
                for line in f:
                    if line.startswith(("#", "^")):
                        continue
                    sha, _, name = line.rstrip("\n").partition(" ")
                    if name == ref:
                        value = sha
                        break
        if value is None:
            return None
        if value.startswith("ref:"):
            ref = value[4:].strip()
            continue
        return value if len(value) in (40, 64) and all(c in "0123456789abcdef" for c in value) else None
    return None


@functools.cache
def _git_dirty(work_tree: str) -> bool | None:
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0", LC_ALL="C")
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=work_tree,
            env=env,
            capture_output=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return bool(out.stdout.strip())


def _signatures(paths: list[Path]) -> tuple[tuple[int, int, int] | None, ...]:
    """(inode, mtime, size) of each path, None for one that is missing: git replaces a
    ref or HEAD by a rename, so any change gives another inode."""
    out: list[tuple[int, int, int] | None] = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


#: git_info's last answer per git dir: the files it read, their signatures, the answer.
#: A process starting many runs reads HEAD and the refs again only when one changed
#: (a few stat calls instead of opening and reading them).
_git_seen: dict[str, tuple[list[Path], tuple[tuple[int, int, int] | None, ...], dict[str, Any]]] = {}


def git_info(start: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """``git_commit``, ``git_branch`` and ``git_dirty`` of the work tree holding ``start``
    (default: the current folder); empty outside a git work tree.

    The commit is read from ``.git/HEAD``, loose refs and ``packed-refs`` (linked
    work trees too) without running git. The dirty flag needs ``git status``:
    it is run once per work tree per process (``--untracked-files=no``, without
    taking git's index lock) and cached, so a process that starts thousands of
    runs spawns it once; later edits in that process's lifetime are not seen.
    It is omitted when git is not installed or takes more than 5 s. HEAD and the
    refs are read again only when one of the files read changed (inode, mtime or
    size: a commit or a checkout replaces them), so a later call costs a few stats.
    """
    found = _find_git_dir(os.path.abspath(start if start is not None else os.getcwd()))
    if found is None:
        return {}
    work_tree, git_dir_s = found
    seen = _git_seen.get(git_dir_s)
    if seen is not None and _signatures(seen[0]) == seen[1]:
        info: dict[str, Any] | None = dict(seen[2])
    else:
        info = _git_commit_info(git_dir_s)
    if info is None:
        return {}
    dirty = _git_dirty(work_tree)
    if dirty is not None:
        info["git_dirty"] = dirty
    return info


def _git_commit_info(git_dir_s: str) -> dict[str, Any] | None:
    """``git_branch`` and ``git_commit`` of a git dir, read from its files (and
    remembered in ``_git_seen`` with their signatures); None without a readable HEAD."""
    git_dir = Path(git_dir_s)
    consulted = [git_dir / "commondir", git_dir / "HEAD"]
    common = git_dir
    with contextlib.suppress(OSError):
        rel = (git_dir / "commondir").read_text(encoding="utf-8").strip()
        common = (git_dir / rel).resolve() if rel else git_dir
    info: dict[str, Any] = {}
    try:
        head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    refs: list[Path] = []
    if head.startswith("ref:"):
        ref = head[4:].strip()
        if ref.startswith("refs/heads/"):
            info["git_branch"] = ref[len("refs/heads/") :]
        commit = _read_ref(git_dir, common, ref, refs)
    else:
        commit = _read_ref(git_dir, common, "HEAD", refs)
    if commit is not None:
        info["git_commit"] = commit
    consulted += refs
    signatures = _signatures(consulted)
    # A file written between its read above and its stat here would be remembered with
    # its new signature and the old answer: only files unchanged for a while are trusted.
    recent = (time.time() - 2.0) * 1e9
    if all(sig is None or sig[1] < recent for sig in signatures):
        _git_seen[git_dir_s] = (consulted, signatures, dict(info))
    return info


PROVENANCE_OPTIONS = ("argv", "redact")


def provenance_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Checked ``provenance=`` options: ``{"argv": bool, "redact": [regex, ...]}``."""
    import re

    if options is None:
        return {"argv": True, "redact": ()}
    if not isinstance(options, Mapping):
        raise TypeError(f"provenance must be a dict such as {{'argv': False}}; got {type(options).__name__}")
    unknown = sorted(set(options) - set(PROVENANCE_OPTIONS))
    if unknown:
        raise ValueError(f"provenance: unknown option(s) {', '.join(map(repr, unknown))}; known: argv, redact")
    argv = options.get("argv", True)
    if not isinstance(argv, bool):
        raise TypeError(f"provenance['argv'] must be True or False; got {argv!r}")
    redact = options.get("redact", ())
    if isinstance(redact, (str, re.Pattern)):
        redact = (redact,)
    patterns = []
    for p in redact:
        if isinstance(p, re.Pattern):
            patterns.append(p)
        elif isinstance(p, str):
            try:
                patterns.append(re.compile(p))
            except re.error as e:
                raise ValueError(f"provenance['redact']: bad regular expression {p!r}: {e}") from None
        else:
            raise TypeError(f"provenance['redact'] must be regular expressions (str); got {p!r}")
    return {"argv": argv, "redact": tuple(patterns)}


def provenance(options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Where and by what this process runs: host, pid, user, argv, cwd, python,
    platform, flightlog and numpy versions, git commit/branch/dirty flag.

    ``argv`` has secret-looking values replaced by ``"<redacted>"`` (option values
    such as ``--password X``, ``key=value`` secrets, URL passwords; see
    :mod:`flightlog._redact`). ``options`` (``TelemetryManager(provenance=...)``):
    ``{"argv": False}`` leaves argv out, ``{"redact": [regex, ...]}`` also masks
    what the regular expressions match.

    What cannot change during a process (host, user, versions, platform) is
    computed once and cached; pid, argv, cwd and the git commit are read on every
    call. ``None`` values are left out.
    """
    from .._redact import redact_argv

    opts = provenance_options(options)
    pid = os.getpid()
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = None
    out = dict(_static_provenance())
    out.update(
        {
            "pid": pid,
            "pid_start_ticks": _own_start_ticks(pid),
            "argv": redact_argv(sys.argv, opts["redact"]) if opts["argv"] else None,
            "cwd": cwd,
        }
    )
    if cwd is not None:
        out.update(git_info(cwd))
    return {k: v for k, v in out.items() if v is not None}
