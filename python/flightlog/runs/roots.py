"""Opening the :class:`~flightlog.runs.tree.RootTree` of a root, local or ``s3://``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._s3 import is_object_url
from .ids import ROOT_ENV, resolve_root
from .s3tree import ObjectTree
from .tree import LocalRootTree, RootTree

__all__ = ["open_root", "open_tree"]


def open_tree(root: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None) -> RootTree:
    """The tree of ``root``: ``s3://bucket/prefix`` (settings from ``AWS_*`` and
    ``storage_options``) or a local folder."""
    if is_object_url(root):
        return ObjectTree(str(root), storage_options)
    if storage_options is not None:
        raise ValueError(f"storage_options is only for object-store roots (s3://...), not {root!r}")
    return LocalRootTree(Path(root))


def open_root(base_path: str | os.PathLike[str] | None, storage_options: Mapping[str, Any] | None = None) -> RootTree:
    """The tree a run records into: ``base_path``, else ``$FLIGHTLOG_ROOT``, else the
    default folder; a local root is created if missing and checked to be writable
    (:func:`~flightlog.runs.ids.resolve_root`)."""
    url = base_path if base_path is not None else os.environ.get(ROOT_ENV)
    if is_object_url(url):
        return ObjectTree(str(url), storage_options)
    if storage_options is not None:
        raise ValueError(f"storage_options is only for object-store roots (s3://...), not {base_path!r}")
    return LocalRootTree(resolve_root(base_path))
