"""Organizational domains and DMARC-style alignment for the provider models.

Owns ``org_domain`` (the registrable domain under the Public Suffix List, via the
offline ``publicsuffixlist`` package, with a last-two-labels fallback when it is not
installed) and ``aligned`` (relaxed alignment, RFC 7489 §3.1: same organizational
domain). Pure functions, cached; no DNS, no IO.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

_psl: Any = None
try:  # the bundled list is offline; it is the project's source for org domains
    from publicsuffixlist import PublicSuffixList

    _psl = PublicSuffixList()
except ImportError:  # pragma: no cover - fallback only without the package
    _psl = None


@lru_cache(maxsize=1 << 14)
def org_domain(domain: str) -> str:
    """The organizational (registrable) domain of ``domain``, lower-case; "" for ""."""
    d = domain.strip().strip(".").lower()
    if not d:
        return ""
    if _psl is not None:
        found = _psl.privatesuffix(d)
        return str(found) if found else d
    labels = d.split(".")
    return ".".join(labels[-2:])


def aligned(a: str | None, b: str | None) -> bool:
    """Relaxed alignment: both domains present and in the same organizational domain."""
    return bool(a) and bool(b) and org_domain(a or "") == org_domain(b or "")
