"""S3-compatible object-store roots: URL parsing, one configuration for every client.

A root ``s3://bucket/prefix`` is written by the Rust core (the ``object_store``
crate) and read by DuckDB (``httpfs``). Both take their settings from the same
place: the usual ``AWS_*`` environment variables, overridden per call by
``storage_options`` (keys as ``object_store`` spells them: ``aws_access_key_id``,
``aws_secret_access_key``, ``aws_region``, ``aws_endpoint``, ``aws_session_token``,
``aws_allow_http``, ``aws_virtual_hosted_style_request``, ...). This module turns
them into the two dialects.

Kept free of heavy imports: it is imported by the manager and the catalog only
when a root is an object-store URL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

SCHEMES = ("s3://", "s3a://")

# object_store's spelling for each setting, with the aliases users also write
# (boto3's and the AWS CLI's names, and object_store's own short forms).
_ALIASES: dict[str, str] = {
    "access_key_id": "aws_access_key_id",
    "key_id": "aws_access_key_id",
    "secret_access_key": "aws_secret_access_key",
    "secret": "aws_secret_access_key",
    "session_token": "aws_session_token",
    "token": "aws_session_token",
    "aws_token": "aws_session_token",
    "region": "aws_region",
    "region_name": "aws_region",
    "aws_default_region": "aws_region",
    "default_region": "aws_region",
    "endpoint": "aws_endpoint",
    "endpoint_url": "aws_endpoint",
    "aws_endpoint_url": "aws_endpoint",
    "allow_http": "aws_allow_http",
    "virtual_hosted_style_request": "aws_virtual_hosted_style_request",
}

_TRUE = ("1", "true", "yes", "on")

# The AWS_* environment variables taken as settings (object_store's own list, in its
# spelling after _ALIASES). Others (AWS_CA_BUNDLE, AWS_PROFILE, AWS_PAGER, ...) belong
# to other tools: passing them on would make the Rust core reject an unknown key.
_ENV_KEYS = frozenset(
    {
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "aws_region",
        "aws_endpoint",
        "aws_bucket",
        "aws_bucket_name",
        "aws_virtual_hosted_style_request",
        "aws_allow_http",
        "aws_imdsv1_fallback",
        "aws_metadata_endpoint",
        "aws_container_credentials_relative_uri",
        "aws_container_credentials_full_uri",
        "aws_container_authorization_token_file",
        "aws_unsigned_payload",
        "aws_skip_signature",
        "aws_checksum_algorithm",
        "aws_s3_express",
        "aws_request_payer",
        "aws_conditional_put",
        "aws_copy_if_not_exists",
        "aws_disable_tagging",
        "aws_server_side_encryption",
        "aws_sse_kms_key_id",
        "aws_sse_bucket_key_enabled",
        "aws_sse_customer_key_base64",
        "aws_web_identity_token_file",
        "aws_role_arn",
        "aws_role_session_name",
    }
)


def is_object_url(path: Any) -> bool:
    """Whether ``path`` names an object-store root (``s3://`` or ``s3a://``)."""
    return isinstance(path, str) and path.lower().startswith(SCHEMES)


class ObjectLocation:
    """A parsed ``s3://bucket/prefix`` root; keys below it are ``/``-joined."""

    __slots__ = ("bucket", "prefix")

    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    @classmethod
    def parse(cls, url: str) -> ObjectLocation:
        """Parses ``s3://bucket[/prefix]``; raises ``ValueError`` naming what is wrong."""
        if not is_object_url(url):
            raise ValueError(f"not an object-store URL (expected s3://bucket/prefix): {url!r}")
        parts = urlsplit(url)
        bucket = parts.netloc
        if not bucket:
            raise ValueError(f"object-store URL {url!r} has no bucket: write s3://bucket/prefix")
        if parts.query or parts.fragment:
            raise ValueError(f"object-store URL {url!r} must not have a query or fragment")
        if not 3 <= len(bucket) <= 63 or any(c not in "abcdefghijklmnopqrstuvwxyz0123456789.-" for c in bucket):
            raise ValueError(
                f"bucket name {bucket!r} in {url!r} is not a valid S3 bucket name "
                "(3 to 63 lowercase letters, digits, '.' and '-')"
            )
        segments = [s for s in parts.path.split("/") if s]
        for s in segments:
            if s in (".", ".."):
                raise ValueError(f"object-store URL {url!r} must not contain '.' or '..' segments")
        return cls(bucket, "/".join(segments))

    def key(self, *parts: str) -> str:
        """The object key of ``parts`` below the prefix."""
        rel = "/".join(p.strip("/") for p in parts if p.strip("/"))
        return f"{self.prefix}/{rel}" if self.prefix and rel else (self.prefix or rel)

    def url(self, *parts: str) -> str:
        """The ``s3://`` URL of ``parts`` below the prefix (the root itself without parts)."""
        key = self.key(*parts)
        return f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"

    def relative(self, key: str) -> str:
        """``key`` relative to the prefix (``ValueError`` if it is not below it)."""
        if not self.prefix:
            return key
        if key.startswith(self.prefix + "/"):
            return key[len(self.prefix) + 1 :]
        raise ValueError(f"object key {key!r} is not below the root prefix {self.prefix!r}")

    def __str__(self) -> str:
        return self.url()

    def __repr__(self) -> str:
        return f"ObjectLocation({self.url()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectLocation) and (self.bucket, self.prefix) == (other.bucket, other.prefix)

    def __hash__(self) -> int:
        return hash((self.bucket, self.prefix))


def storage_options(overrides: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The object-store settings: ``AWS_*`` environment variables, then ``overrides``.

    Keys come out in ``object_store``'s spelling (``aws_endpoint`` etc.). An
    ``http://`` endpoint turns on ``aws_allow_http`` (a loopback test server or
    a private gateway), unless it is set explicitly. Only the environment
    variables ``object_store`` knows are taken (``AWS_CA_BUNDLE``, ``AWS_PROFILE``
    and the like belong to other tools); unknown keys in ``overrides`` are
    passed on unchanged: the Rust core rejects what it does not know, naming the key.
    """
    opts: dict[str, str] = {}
    for name, value in os.environ.items():
        if name.startswith("AWS_") and value:
            key = name.lower()
            key = _ALIASES.get(key, key)
            if key in _ENV_KEYS:
                opts[key] = value
    for name, value in (overrides or {}).items():
        if not isinstance(name, str):
            raise TypeError(f"storage_options keys must be strings, got {name!r}")
        key = name.lower()
        if value is None:
            opts.pop(_ALIASES.get(key, key), None)
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        opts[_ALIASES.get(key, key)] = str(value)
    endpoint = opts.get("aws_endpoint", "")
    if endpoint.startswith("http://"):
        opts.setdefault("aws_allow_http", "true")
    return opts


_stores: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}


def open_store(location: ObjectLocation, overrides: Mapping[str, Any] | None = None) -> Any:
    """The native ``ObjectStore`` of ``location``'s bucket with :func:`storage_options`,
    shared per process by bucket and settings (one HTTP connection pool for every
    run a tuner starts). Keys passed to it are full keys (``location.key(...)``)."""
    from . import _core

    opts = storage_options(overrides)
    cache_key = (location.bucket, tuple(sorted(opts.items())))
    store = _stores.get(cache_key)
    if store is None:
        store = _core.ObjectStore(f"s3://{location.bucket}", list(opts.items()))
        _stores[cache_key] = store
    return store


def duckdb_secret_sql(options: Mapping[str, str], name: str = "flightlog_s3", scope: str | None = None) -> str:
    """``CREATE OR REPLACE SECRET`` for DuckDB's httpfs from :func:`storage_options` output."""

    def lit(v: str) -> str:
        return "'" + v.replace("'", "''") + "'"

    parts = ["TYPE s3"]
    if "aws_access_key_id" in options:
        parts.append(f"KEY_ID {lit(options['aws_access_key_id'])}")
    if "aws_secret_access_key" in options:
        parts.append(f"SECRET {lit(options['aws_secret_access_key'])}")
    if "aws_session_token" in options:
        parts.append(f"SESSION_TOKEN {lit(options['aws_session_token'])}")
    parts.append(f"REGION {lit(options.get('aws_region', 'us-east-1'))}")
    endpoint = options.get("aws_endpoint")
    if endpoint:
        split = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
        parts.append(f"ENDPOINT {lit(split.netloc + split.path.rstrip('/'))}")
        parts.append(f"USE_SSL {'false' if split.scheme == 'http' else 'true'}")
    virtual = options.get("aws_virtual_hosted_style_request", "").lower() in _TRUE
    # A custom endpoint (moto, SeaweedFS, MinIO, a gateway) almost always wants
    # path-style URLs; AWS itself takes either.
    parts.append(f"URL_STYLE {lit('vhost' if virtual or not endpoint else 'path')}")
    if scope:
        parts.append(f"SCOPE {lit(scope)}")
    return f"CREATE OR REPLACE SECRET {name} ({', '.join(parts)})"


def extension_path(name: str) -> str | None:
    """The DuckDB extension binary shipped by the ``duckdb-extension-<name>`` wheel, if installed."""
    import importlib.util

    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or not spec.submodule_search_locations:
        return None
    import duckdb

    version = duckdb.__version__
    for base in spec.submodule_search_locations:
        candidate = os.path.join(base, "extensions", f"v{version}", f"{name}.duckdb_extension")
        if os.path.exists(candidate):
            return candidate
    return None


def load_extensions(con: Any, *names: str) -> None:
    """Loads DuckDB extensions: from the ``duckdb-extension-*`` wheels when installed
    (offline), else whatever DuckDB already has installed. Raises ``ImportError``
    naming the missing extension and the extra that provides it."""
    import duckdb

    for name in names:
        path = extension_path(name)
        try:
            if path is not None:
                con.execute("LOAD '" + path.replace("'", "''") + "'")
            else:
                con.execute(f"LOAD {name}")
        except duckdb.Error as e:
            raise ImportError(
                f"the DuckDB extension {name!r} is not available for duckdb {duckdb.__version__}: "
                f"pip install 'flightlog[lake]' (it carries the extensions for duckdb 1.5.5 and works offline), "
                f"or run INSTALL {name} where DuckDB can download it ({' '.join(str(e).split())})"
            ) from e
