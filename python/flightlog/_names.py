"""Validation of names that end up in paths, file names and tables.

``flow_name``, ``run_id``, ``trial_id``, ``run_prefix`` and event names all pass
through :func:`validate_name` before anything touches the disk, so a bad name
can never escape the root folder, hide a file, or break a table printed for a
person.
"""

from __future__ import annotations

import os
import unicodedata

__all__ = ["MAX_NAME_LENGTH", "validate_name"]

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
