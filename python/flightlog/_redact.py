"""Masking secrets in text that flightlog writes down: messages and ``provenance.argv``.

One place for the patterns, used by the catalog (DSNs in messages and ``repr``) and by
the manifest (the command line of the recording process).

What counts as a secret in a command line (:func:`redact_argv`):

- the value of an option whose name looks secret: ``--password X``, ``--password=X``,
  ``--aws-secret-access-key=X``, ``--token``, ``--api-key``, ``--passwd``, ``--secret``,
  ``--credentials``, ``--private-key``, ``--auth`` ... (any name containing ``pass``,
  ``secret``, ``token``, ``api-key``/``apikey``, ``access-key``, ``credential``,
  ``private-key`` or ``auth``, not followed by a letter: ``--max-tokens`` and
  ``--tokenizer`` are kept), with ``-`` or ``_`` separators, any case;
- ``key=value`` words with such a key (``password=X`` in a libpq DSN, ``db.token=X``
  in Hydra-style overrides), also inside a longer argument;
- the password of a URL's userinfo: ``scheme://user:X@host`` -> ``scheme://user:<redacted>@host``;
- whatever the caller's extra regular expressions match.

A secret-looking option's next argument is masked even when it is not a secret (a
``--token-file`` path): a false positive costs a path in the manifest, a false
negative a credential.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

REDACTED = "<redacted>"

# Not followed by a letter: --max-tokens, --tokenizer, --passes, --author stay as they are.
_SECRET_WORD = (
    r"(?:pass(?:word|wd|phrase)?|secrets?|token|api[-_]?key|apikey|access[-_]?key|credentials?"
    r"|private[-_]?key|auth)(?![a-z])"
)
# An option (-x / --name) whose name contains a secret word; value after '=' or in the next argument.
_SECRET_OPTION_RE = re.compile(rf"^(--?[\w.-]*{_SECRET_WORD}[\w.-]*)(?:(=)(.*))?$", re.IGNORECASE | re.DOTALL)
# key=value (a DSN's password=..., an override's db.token=...): the value up to whitespace,
# or a single-quoted libpq value.
_KEY_VALUE_RE = re.compile(
    rf"((?:^|(?<=[\s,;&?]))[\w.-]*{_SECRET_WORD}[\w.-]*\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'\",;&]+)", re.IGNORECASE
)
# scheme://user:password@host: any scheme.
_URL_USERINFO_RE = re.compile(r"([a-z][a-z0-9+.\-]*://[^:/@\s]*:)([^@\s]+)(@)", re.IGNORECASE)

# The catalog's DSN patterns (messages and repr mask with "***", as documented there).
_PASSWORD_RE = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'\"]+)", re.IGNORECASE)
_URI_PASSWORD_RE = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)([^@\s]*)(@)", re.IGNORECASE)


def redact_dsn(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with PostgreSQL passwords (``password=...``, ``postgresql://u:pw@``) and the
    given ``secrets`` masked as ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _PASSWORD_RE.sub(lambda m: m.group(1) + "***", text)
    return _URI_PASSWORD_RE.sub(lambda m: m.group(1) + "***" + m.group(3), text)


def dsn_passwords(dsn: str) -> list[str]:
    """The passwords written in a DSN (to mask them wherever else they appear)."""
    found = [m.group(2).strip("'") for m in _PASSWORD_RE.finditer(dsn)]
    found += [m.group(2) for m in _URI_PASSWORD_RE.finditer(dsn)]
    return [p for p in found if p and p != "***"]


def redact_text(text: str, extra: Sequence[re.Pattern[str]] = ()) -> str:
    """One argument with ``key=secret`` values, URL passwords and ``extra`` matches masked."""
    text = _KEY_VALUE_RE.sub(lambda m: m.group(1) + REDACTED, text)
    text = _URL_USERINFO_RE.sub(lambda m: m.group(1) + REDACTED + m.group(3), text)
    for pattern in extra:
        text = pattern.sub(REDACTED, text)
    return text


def redact_argv(argv: Sequence[str], extra: Sequence[str | re.Pattern[str]] = ()) -> list[str]:
    """``argv`` with secret-looking values replaced by ``"<redacted>"`` (see the module doc).

    >>> redact_argv(["train.py", "--password", "hunter2", "--db=postgresql://u:pw@h/d", "--lr=0.1"])
    ['train.py', '--password', '<redacted>', '--db=postgresql://u:<redacted>@h/d', '--lr=0.1']
    """
    patterns = [p if isinstance(p, re.Pattern) else re.compile(p) for p in extra]
    out: list[str] = []
    mask_next = False
    for arg in argv:
        arg = str(arg)
        if mask_next:
            mask_next = False
            if not arg.startswith("--"):  # `--password --next-option`: no value was given
                out.append(REDACTED)
                continue
        m = _SECRET_OPTION_RE.match(arg)
        if m is not None:
            if m.group(2):
                out.append(f"{m.group(1)}={REDACTED}")
            else:
                out.append(arg)
                mask_next = True
            continue
        out.append(redact_text(arg, patterns))
    return out
