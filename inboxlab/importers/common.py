"""Shared parts of the log importers: reading lines, bulk JSON decoding with malformed-line
isolation, provider inference, timestamps, and the per-file report.

Provider inference uses a small table of well-known consumer domains and MX suffixes (below,
from each provider's public MX records). ``engine.profiles`` / ``ProviderMatcher`` were not in
the tree when this was written; switch ``provider_expr`` to them once they land.

Owns: helpers only. Must not touch: the warehouse (``inboxlab.warehouse``) or event names.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from engine.errors import InputError

# provider -> (recipient domains, MX host suffixes). MX suffixes as published in each
# provider's DNS (e.g. gmail.com MX *.l.google.com; yahoo.com MX *.yahoodns.net;
# outlook.com MX *.olc.protection.outlook.com; icloud.com MX *.mail.icloud.com).
PROVIDERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "gmail": (("gmail.com", "googlemail.com"), ("google.com", "googlemail.com")),
    "yahoo": (("yahoo.com", "ymail.com", "rocketmail.com", "aol.com", "yahoo.co.uk",
               "yahoo.fr"), ("yahoodns.net",)),
    "microsoft": (("outlook.com", "hotmail.com", "live.com", "msn.com", "hotmail.co.uk"),
                  ("protection.outlook.com", "mx.microsoft")),
    "apple": (("icloud.com", "me.com", "mac.com"), ("icloud.com",)),
    "comcast": (("comcast.net",), ("comcast.net",)),
    "orange": (("orange.fr", "wanadoo.fr"), ("orange.fr",)),
}


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
    """Non-blank lines of ``data`` as one string Series (decoded leniently)."""
    text = data.decode("utf-8", errors="replace")
    series = pl.Series("line", [text], dtype=pl.Utf8).str.split("\n").explode()
    series = series.str.strip_suffix("\r")
    return series.filter(series.str.contains(r"\S"))


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


def provider_expr(domain: pl.Expr, mx: pl.Expr | None = None) -> pl.Expr:
    """The provider of each row from its MX host (suffix match) or else its recipient domain."""
    expr: pl.Expr = pl.lit(None, dtype=pl.Utf8)
    lower_mx = mx.str.to_lowercase().str.strip_chars_end(".") if mx is not None else None
    for name, (domains, suffixes) in reversed(PROVIDERS.items()):
        cond = domain.is_in(list(domains))
        if lower_mx is not None:
            for suffix in suffixes:
                cond = cond | (lower_mx == suffix) | lower_mx.str.ends_with("." + suffix)
        expr = pl.when(cond).then(pl.lit(name)).otherwise(expr)
    return expr


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
