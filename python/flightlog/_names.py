"""Validation of names that end up in paths, file names and tables.

``flow_name``, ``run_id``, ``trial_id``, ``run_prefix`` and event names all pass
through :func:`validate_name` before anything touches the disk, so a bad name
can never escape the root folder, hide a file, or break a table printed for a
person.

File systems limit one path component to 255 *bytes* (``NAME_MAX``), not
characters: :func:`check_run_names` builds the longest file and folder names a
run will make from its ids, in bytes, and refuses the ids up front.
"""

from __future__ import annotations

import os
import unicodedata

__all__ = ["MAX_NAME_LENGTH", "NAME_MARGIN_BYTES", "NAME_MAX_BYTES", "check_run_names", "validate_name"]

#: The longest name accepted (in characters).
MAX_NAME_LENGTH = 128

_SEPARATORS = frozenset(s for s in ("/", "\\", os.sep, os.altsep) if s)
# Cc: C0/C1 controls and DEL; Cs: lone surrogates (cannot be encoded as a file
# name); Zl/Zp: line and paragraph separators (break lines like a newline).
_BAD_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate_name(kind: str, value: object) -> str:
    """Return ``value`` if it is a safe name, else raise.

    A safe name is a non-empty ``str`` of at most 128 characters without path
    separators (``/``, ``\\``, ``os.sep``, ``os.altsep``), that is not ``.`` or
    ``..``, and holds no control characters (C0, DEL, C1), lone surrogates or
    line/paragraph separators.

    ``kind`` names the argument in the error message (``"flow_name"``,
    ``"event name"``, ...).

    >>> validate_name("flow_name", "gd_demo")
    'gd_demo'
    >>> validate_name("flow_name", "../etc")
    Traceback (most recent call last):
    ...
    ValueError: flow_name '../etc' is not valid: it contains a path separator '/'

    Raises:
        TypeError: ``value`` is not a ``str``.
        ValueError: ``value`` is empty, too long, or holds a forbidden character.
    """
    if not isinstance(value, str):
        raise TypeError(f"{kind} must be a str, got {type(value).__name__} {_show(value)}")

    def bad(reason: str) -> ValueError:
        return ValueError(f"{kind} {_show(value)} is not valid: {reason}")

    if not value:
        raise bad("it is empty")
    if len(value) > MAX_NAME_LENGTH:
        raise bad(f"it is {len(value)} characters long (at most {MAX_NAME_LENGTH})")
    for sep in _SEPARATORS:
        if sep in value:
            raise bad(f"it contains a path separator {sep!r}")
    if value in (".", ".."):
        raise bad("it is a relative path component")
    for i, ch in enumerate(value):
        if unicodedata.category(ch) in _BAD_CATEGORIES:
            raise bad(f"it contains the control character {ch!r} at position {i}")
    return value


#: Longest file or folder name (one path component) in bytes: ``NAME_MAX`` of Linux
#: file systems (ext4, xfs, btrfs, tmpfs) and of macOS.
NAME_MAX_BYTES = 255

#: Bytes kept free in the name of every file that is published through a temp
#: name, beyond the suffixes written today: room for a per-instance (writer)
#: component in segment names (being added to ``layout.rs``) and for the temp
#: suffix to grow, so that those changes cannot turn an accepted id into a
#: ``File name too long`` after rows were recorded.
NAME_MARGIN_BYTES = 32

# Worst cases of what the writers add to an id, each from the code that makes the name:
# `_N` of a taken id: runs.claim tries at most 100,000 suffixes, so "_" + 7 digits.
_COLLISION = "_" + "9" * 7
# Sequence number of a part: `{seq:06}` of a u64 (layout.rs), up to 20 digits.
_SEQ = "9" * 20
# Temp name of a file published by the recorder (atomic_file.rs, temp_path_for):
# `.{name}.tmp-{pid:x}{nanos & 0xffffffff:x}{counter:x}`, at most 8 + 8 + 16 hex digits.
_RUST_TEMP = ".tmp-" + "f" * 32
# Temp name of a manifest: published by the same atomic writer (_core.publish_bytes).
_MANIFEST_TEMP = _RUST_TEMP


def _nbytes(text: str) -> int:
    return len(os.fsencode(text))


def check_run_names(*, flow_name: str, run_id: str | None, run_prefix: str, mode: str) -> None:
    """Raise ``ValueError`` unless every file and folder name a run makes fits in
    :data:`NAME_MAX_BYTES` bytes.

    The names (worst cases: a ``_NNNNNNN`` suffix of a taken id, a 20-digit part
    number, the longest temp suffix), checked in every mode because other runs
    and tools of the same root make them too:

    - ``flows/<flow_name>``;
    - the run folder ``<run_prefix><run_id>_NNNNNNN`` (a dev/tuner run checks
      that it does not exist);
    - dev/tuner: ``runs/<run_id>_NNNNNNN.toml`` and the parts
      ``part-<run_id>_NNNNNNN-<seq>.parquet``, each with its temp name
      ``.<name>.tmp-<unique>``.

    Files published through a temp name also keep :data:`NAME_MARGIN_BYTES` free.
    ``run_id=None`` stands for the default id ``YYYYMMDD_HHMMSS``. The names
    must have passed :func:`validate_name`.

    >>> check_run_names(flow_name="gd", run_id="é" * 110, run_prefix="fda_run_", mode="dev")
    Traceback (most recent call last):
    ...
    ValueError: run_id 'ééé... is 220 bytes long in UTF-8, ... run_id may take at most 143 bytes here
    """
    rid = "YYYYMMDD_HHMMSS" if run_id is None else run_id
    # (what, pattern shown, [(argument, value)], fixed bytes around them, margin)
    names: list[tuple[str, str, list[tuple[str, str]], int, int]] = [
        ("the flow folder", "flows/<flow_name>", [("flow_name", flow_name)], 0, 0),
        (
            "the run folder",
            "<run_prefix><run_id>_NNNNNNN",
            [("run_prefix", run_prefix), ("run_id", rid)],
            len(_COLLISION),
            0,
        ),
    ]
    if mode != "run":
        names += [
            (
                "the temp name of the run's manifest",
                ".<run_id>_NNNNNNN.toml.tmp-<unique>",
                [("run_id", rid)],
                _nbytes(f".{_COLLISION}.toml{_MANIFEST_TEMP}"),
                NAME_MARGIN_BYTES,
            ),
            (
                "the temp names of the parts",
                ".part-<run_id>_NNNNNNN-<seq>.parquet.tmp-<unique>",
                [("run_id", rid)],
                _nbytes(f".part-{_COLLISION}-{_SEQ}.parquet{_RUST_TEMP}"),
                NAME_MARGIN_BYTES,
            ),
        ]
    worst: tuple[int, str] | None = None  # (room left for the argument, message)
    for what, pattern, parts, fixed, margin in names:
        sizes = [(_nbytes(value), kind, value) for kind, value in parts]
        total = fixed + sum(n for n, _, _ in sizes)
        if total + margin <= NAME_MAX_BYTES:
            continue
        # Blame the longest argument the caller gave (the default id is never to blame).
        given = [s for s in sizes if not (s[1] == "run_id" and run_id is None)]
        n, kind, value = max(given)
        room = max(NAME_MAX_BYTES - margin - (total - n), 0)
        kept = f", {margin} of them kept free for future suffixes" if margin else ""
        others = ", ".join(f"{k} {_show(v)} is {m} bytes" for m, k, v in sizes if k != kind)
        message = (
            f"{kind} {_show(value)} is {n} bytes long in UTF-8, too long for {what} ({pattern}"
            f"{'; ' + others if others else ''}): a file name holds {NAME_MAX_BYTES} bytes{kept}; "
            f"{kind} may take at most {room} bytes here"
        )
        if worst is None or room < worst[0]:
            worst = (room, message)
    if worst is not None:  # the name that leaves the least room: its limit is the one that holds
        raise ValueError(worst[1])
