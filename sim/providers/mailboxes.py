"""Deterministic mailbox facts: does an address exist, is it full, is it a trap.

Owns the local-part convention the tests, the simulation and the sandbox use to target
behaviour, and the hash that decides the rest. A local part that *starts with* one of
these words (followed by nothing, a digit or one of ``-+._``) behaves so:

    unknown, nouser  -> does not exist (550 5.1.1)
    inactive         -> disabled (550 5.2.1)
    full             -> over quota (452 4.2.2 / provider's text)
    trap             -> a spam trap: accepted, counts a trap hit
    complain         -> accepted; always complains later
    engaged          -> accepted; always engages later
    bounce           -> accepted at SMTP; bounced later by DSN (after-queue rejection)

Any other address is decided by a keyed hash of the lower-cased address: a uniform
number in [0, 1) compared with the model's ``unknown_fraction`` and ``full_fraction``.
Pure functions; no state beyond a bounded cache.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import Literal

MailboxKind = Literal[
    "normal", "unknown", "inactive", "full", "trap", "complain", "engaged", "bounce"
]

_WORDS: dict[str, MailboxKind] = {
    "unknown": "unknown",
    "nouser": "unknown",
    "inactive": "inactive",
    "full": "full",
    "trap": "trap",
    "complain": "complain",
    "engaged": "engaged",
    "bounce": "bounce",
}
_CONVENTION = re.compile(r"^(unknown|nouser|inactive|full|trap|complain|engaged|bounce)(?:[-+._\d]|$)")
_ADDRESS = re.compile(r"^[^@\s<>()\[\]\\,;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


def valid_address(address: str) -> bool:
    """A plain, conservative check of an envelope address (local@domain)."""
    return len(address) <= 254 and _ADDRESS.match(address) is not None


def _unit(address: str) -> float:
    digest = hashlib.blake2b(address.lower().encode(), digest_size=8, person=b"mailbox").digest()
    return int.from_bytes(digest, "big") / 2.0**64


@lru_cache(maxsize=1 << 16)
def address_unit(address: str) -> float:
    """A stable uniform number in [0, 1) for an address (blake2b of its lower-case form)."""
    return _unit(address)


_STARTS = tuple(_WORDS)


def convention(address: str) -> MailboxKind | None:
    """The kind named by the local part, or None when the address follows no convention."""
    local = address.rsplit("@", 1)[0].lower()
    if not local.startswith(_STARTS):  # the common case, without the regex
        return None
    match = _CONVENTION.match(local)
    return _WORDS[match.group(1)] if match else None


def mailbox_kind(address: str, unknown_fraction: float, full_fraction: float) -> MailboxKind:
    """What kind of mailbox ``address`` is under a model's fractions."""
    named = convention(address)
    if named is not None:
        return named
    # uncached: callers memoise kinds per address (``ProviderModel.kind_cache``), so an
    # LRU here would only add a miss per new address
    u = _unit(address)
    if u < unknown_fraction:
        return "unknown"
    if u < unknown_fraction + full_fraction:
        return "full"
    return "normal"
