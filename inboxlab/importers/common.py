"""Shared parts of the log importers: reading lines, bulk JSON decoding with malformed-line
isolation, provider inference, timestamps, and the per-file report.

Provider inference uses the real provider profiles (``engine.profiles.load_profiles`` and
``engine.policy.providers.ProviderMatcher``), so imported rows carry the same provider names the
policy core and the simulation use; an address at an unknown domain is ``"generic"``.

Owns: helpers only. Must not touch: the warehouse (``inboxlab.warehouse``) or event names.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from engine.errors import InputError
from engine.policy.providers import GENERIC, ProviderMatcher


@dataclass(frozen=True, slots=True)
class FileReport:
    """Per-file totals of one import: ``lines`` read (blank lines excluded), ``events``
    produced, ``malformed`` lines that could not be parsed, ``skipped`` well-formed lines that
    carry no event (connects, DNS lookups...), and whether the load was new."""

    file: str
    format: str
    run_id: str
    lines: int
    events: int
    malformed: int
    skipped: int
    loaded: bool


def read_bytes(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def lines_of(data: bytes) -> pl.Series:
    """Non-blank lines of ``data`` as one string Series (decoded leniently; CRLF accepted)."""
    text = data.decode("utf-8", errors="replace")
    series = pl.Series("line", text.split("\n"), dtype=pl.Utf8)
    if "\r" in text:
        series = series.str.strip_suffix("\r")
    return series.filter(series.str.strip_chars().str.len_bytes() > 0)


def decode_json_lines(lines: pl.Series, dtype: pl.Struct) -> tuple[pl.Series, pl.Series]:
    """Decode JSON lines in bulk. Returns ``(decoded structs, ok mask)``; lines that fail are
    isolated by bisection (bulk decoding of the good halves) and come back null with ok=False."""
    ok = [True] * len(lines)

    def attempt(lo: int, hi: int) -> list[pl.Series]:
        part = lines.slice(lo, hi - lo)
        try:
            return [part.str.json_decode(dtype)]
        except pl.exceptions.PolarsError:
            if hi - lo == 1:
                ok[lo] = False
                return [pl.Series([None], dtype=dtype)]
            mid = (lo + hi) // 2
            return attempt(lo, mid) + attempt(mid, hi)

    if len(lines) == 0:
        return pl.Series([], dtype=dtype), pl.Series([], dtype=pl.Boolean)
    chunks = attempt(0, len(lines))
    out = chunks[0]
    for chunk in chunks[1:]:
        out = out.append(chunk)
    return out, pl.Series(ok, dtype=pl.Boolean)


def domain_of(col: pl.Expr) -> pl.Expr:
    return col.str.extract(r"@([^@>\s]+)$", 1).str.to_lowercase()


@functools.cache
def matcher() -> ProviderMatcher:
    """One matcher over the shipped provider profiles (loaded once per process)."""
    from engine.profiles import load_profiles

    return ProviderMatcher(load_profiles())


def _map_unique(values: pl.Series, fn: Callable[[str], str | None]) -> pl.Series:
    """Apply ``fn`` to each distinct non-null value once and map the column through it."""
    uniq = values.drop_nulls().unique()
    table = {v: fn(v) for v in uniq.to_list()}
    return values.replace_strict(table, default=None, return_dtype=pl.Utf8)


def _by_mx(host: str) -> str | None:
    name = matcher().by_mx(host)
    return None if name == GENERIC else name


def provider_expr(domain: pl.Expr, mx: pl.Expr | None = None) -> pl.Expr:
    """The provider profile name of each row: from its MX host (suffix match, longest first)
    when that names a known provider, else from its recipient domain (``"generic"`` for an
    unknown domain); null when the row has neither."""
    by_domain = domain.map_batches(lambda s: _map_unique(s, matcher().resolve),
                                   return_dtype=pl.Utf8)
    if mx is None:
        return by_domain
    by_mx = mx.map_batches(lambda s: _map_unique(s, _by_mx), return_dtype=pl.Utf8)
    return pl.coalesce(by_mx, by_domain)


def smtp_code_of(text: pl.Expr) -> pl.Expr:
    """The basic reply code at the start of a reply (or after Postfix's "said: ")."""
    return text.str.extract(r"(?:^|said: )([2-5]\d\d)(?:[ -]|$)", 1).cast(pl.Int64)


def enhanced_of(text: pl.Expr) -> pl.Expr:
    """The enhanced status code in a reply text (``4.7.28``), RFC 3463 shape."""
    return text.str.extract(r"(?:^|[\s-])([245]\.\d{1,3}\.\d{1,3})(?:\s|$|[;,)])", 1)


def epoch_or_iso(col: pl.Expr) -> pl.Expr:
    """A timestamp from epoch seconds (as text) or an RFC 3339 string, UTC."""
    num = col.cast(pl.Float64, strict=False)
    from_epoch = (num * 1_000_000).cast(pl.Int64).cast(pl.Datetime("us", "UTC"))
    from_iso = col.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
    return pl.when(num.is_not_null()).then(from_epoch).otherwise(from_iso)
