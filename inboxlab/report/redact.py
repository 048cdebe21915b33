"""Redaction for anything a dashboard or report shows about recipients.

Owns: masking addresses (``j***@example.com``) in columns and in free text such as SMTP replies.
Must not touch: the warehouse (callers pass frames or strings in).
"""

from __future__ import annotations

import re

import polars as pl

_ADDR = re.compile(r"([A-Za-z0-9._%+\-=]+)@([A-Za-z0-9.\-]+\.[A-Za-z]{2,})")


def mask_email(address: str | None) -> str | None:
    """``jane.doe@example.com`` -> ``j***@example.com``; no ``@`` -> ``***``; None stays None."""
    if address is None:
        return None
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return "***"
    return f"{local[0]}***@{domain.lower()}"


def mask_text(text: str | None) -> str | None:
    """Every address inside ``text`` masked (SMTP replies often echo the recipient)."""
    if text is None:
        return None
    return _ADDR.sub(lambda m: f"{m.group(1)[0]}***@{m.group(2).lower()}", text)


def redact_frame(frame: pl.DataFrame, address_cols: tuple[str, ...] = ("recipient",),
                 text_cols: tuple[str, ...] = ("response", "reason")) -> pl.DataFrame:
    """``frame`` with address columns masked and addresses in text columns masked."""
    out = frame
    for col in address_cols:
        if col in out.columns:
            out = out.with_columns(
                pl.col(col).map_elements(mask_email, return_dtype=pl.Utf8, skip_nulls=True))
    for col in text_cols:
        if col in out.columns:
            out = out.with_columns(
                pl.col(col).map_elements(mask_text, return_dtype=pl.Utf8, skip_nulls=True))
    return out
