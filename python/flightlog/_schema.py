"""Telemetry schemas: :class:`Schema`, :class:`Field` and :class:`Enum`."""

from __future__ import annotations

from ._errors import SchemaError

# `typing` costs milliseconds at import; type checkers treat this name as typing.TYPE_CHECKING.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from typing import Any

# Plain classes rather than dataclasses: `import flightlog` stays cheap (the
# dataclasses module pulls in inspect).

__all__ = ["DTYPES", "Enum", "Field", "Schema"]

#: The dtype names a :class:`Field` accepts (besides an :class:`Enum`).
DTYPES = ("f64", "f32", "i64", "bool", "str")


class Enum:
    """A string field restricted to fixed labels, stored dictionary-encoded.

    >>> Enum(["RED", "AMBER", "GREEN"]).variants
    ('RED', 'AMBER', 'GREEN')
    """

    __slots__ = ("variants",)
    variants: tuple[str, ...]

    def __init__(self, variants: Iterable[str]) -> None:
        vs = tuple(variants)
        if not vs:
            raise SchemaError("Enum needs at least one variant")
        for v in vs:
            if not isinstance(v, str):
                raise SchemaError(f"Enum variants must be str, got {v!r}")
        if len(set(vs)) != len(vs):
            raise SchemaError(f"Enum variants repeat: {list(vs)}")
        object.__setattr__(self, "variants", vs)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Enum is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Enum) and other.variants == self.variants

    def __hash__(self) -> int:
        return hash(("Enum", self.variants))

    def __repr__(self) -> str:
        return f"Enum({list(self.variants)!r})"


DType = str | Enum


class Field:
    """One column: a name, a dtype (``"f64"``, ``"f32"``, ``"i64"``, ``"bool"``,
    ``"str"`` or an :class:`Enum`), nullability, and optional unit and doc.

    >>> Field("E", "f64", nullable=False, unit="J")
    Field(name='E', dtype='f64', nullable=False, unit='J', doc=None)
    """

    __slots__ = ("doc", "dtype", "name", "nullable", "unit")
    name: str
    dtype: DType
    nullable: bool
    unit: str | None
    doc: str | None

    def __init__(
        self, name: str, dtype: DType, nullable: bool = True, unit: str | None = None, doc: str | None = None
    ) -> None:
        for attr, value in (("name", name), ("dtype", dtype), ("nullable", nullable), ("unit", unit), ("doc", doc)):
            object.__setattr__(self, attr, value)
        self._validate()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Field is immutable")

    def _key(self) -> tuple[object, ...]:
        return (self.name, self.dtype, self.nullable, self.unit, self.doc)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Field) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Field(name={self.name!r}, dtype={self.dtype!r}, nullable={self.nullable!r}, "
            f"unit={self.unit!r}, doc={self.doc!r})"
        )

    def _validate(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SchemaError(f"field name must be a non-empty str, got {self.name!r}")
        if len(self.name) > 128:
            raise SchemaError(f"field name {self.name[:40]!r}... is longer than 128 characters")
        if any(ord(c) < 32 or ord(c) == 127 for c in self.name):
            raise SchemaError(f"field name {self.name!r} contains a control character")
        if isinstance(self.dtype, Enum):
            return
        aliases = {"float": "f64", "float64": "f64", "float32": "f32", "int": "i64", "int64": "i64", "string": "str"}
        if isinstance(self.dtype, str) and self.dtype in aliases:
            object.__setattr__(self, "dtype", aliases[self.dtype])
        if self.dtype not in DTYPES:
            raise SchemaError(
                f"field {self.name!r}: unknown dtype {self.dtype!r}; expected one of {', '.join(DTYPES)} or Enum([...])"
            )
        if not isinstance(self.nullable, bool):
            raise SchemaError(f"field {self.name!r}: nullable must be a bool, got {self.nullable!r}")

    @property
    def dtype_name(self) -> str:
        """``"enum"`` for an :class:`Enum`, else the dtype string."""
        return "enum" if isinstance(self.dtype, Enum) else str(self.dtype)

    def _spec(self) -> tuple[str, str, bool, list[str] | None, str | None, str | None]:
        variants = list(self.dtype.variants) if isinstance(self.dtype, Enum) else None
        return (self.name, self.dtype_name, self.nullable, variants, self.unit, self.doc)


class Schema:
    """An ordered list of :class:`Field` with a version (``schema_version`` in every file).

    >>> s = Schema([Field("iter", "i64", nullable=False), Field("E", "f64")], version=2)
    >>> s.names
    ('iter', 'E')
    >>> s["E"].dtype
    'f64'
    """

    __slots__ = ("_index", "fields", "version")
    fields: tuple[Field, ...]
    version: int
    _index: dict[str, int]

    def __init__(self, fields: Sequence[Field], version: int = 1) -> None:
        fs = tuple(fields)
        if not fs:
            raise SchemaError("a schema needs at least one field")
        for f in fs:
            if not isinstance(f, Field):
                raise SchemaError(f"schema fields must be Field objects, got {f!r}")
        if isinstance(version, bool) or not isinstance(version, int):
            raise SchemaError(f"schema version must be an int, got {version!r}")
        index: dict[str, int] = {}
        for i, f in enumerate(fs):
            if f.name in index:
                raise SchemaError(f"field {f.name!r} appears twice in the schema")
            index[f.name] = i
        object.__setattr__(self, "fields", fs)
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "_index", index)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Schema is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schema) and other.fields == self.fields and other.version == self.version

    def __hash__(self) -> int:
        return hash((self.fields, self.version))

    def __repr__(self) -> str:
        return f"Schema({list(self.fields)!r}, version={self.version})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def __getitem__(self, name: str) -> Field:
        try:
            return self.fields[self._index[name]]
        except KeyError:
            raise SchemaError(f"no field {name!r} in schema {self.describe()}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[Field]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def describe(self) -> str:
        """``[iter: i64, E: f64?, ...]`` (``?`` marks nullable fields)."""
        return "[" + ", ".join(f"{f.name}: {f.dtype_name}{'?' if f.nullable else ''}" for f in self.fields) + "]"

    def with_fields(self, extra: Sequence[Field], *, first: bool = True) -> Schema:
        """A schema with ``extra`` fields added (before the others when ``first``),
        skipping names already present."""
        new = [f for f in extra if f.name not in self._index]
        fs = (*new, *self.fields) if first else (*self.fields, *new)
        return Schema(fs, version=self.version)

    def to_json(self) -> str:
        """The schema as JSON, in the format of the ``flightlog.schema`` file metadata."""
        import json

        return json.dumps(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        out = []
        for f in self.fields:
            d: dict[str, Any] = {
                "name": f.name,
                "dtype": {"enum": list(f.dtype.variants)} if isinstance(f.dtype, Enum) else f.dtype,
                "nullable": f.nullable,
            }
            if f.unit is not None:
                d["unit"] = f.unit
            if f.doc is not None:
                d["doc"] = f.doc
            out.append(d)
        return {"fields": out, "version": self.version}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        """Inverse of :meth:`to_dict` (also reads ``flightlog.schema`` metadata)."""
        fields = []
        for d in data["fields"]:
            dtype = d["dtype"]
            if isinstance(dtype, dict):
                dtype = Enum(dtype["enum"])
            fields.append(Field(d["name"], dtype, bool(d.get("nullable", True)), d.get("unit"), d.get("doc")))
        return cls(fields, version=int(data.get("version", 1)))

    @classmethod
    def from_json(cls, text: str) -> Schema:
        import json

        return cls.from_dict(json.loads(text))

    def _spec(self) -> list[tuple[str, str, bool, list[str] | None, str | None, str | None]]:
        return [f._spec() for f in self.fields]
