"""Pure provider matching: which profile a recipient domain, MX host or name belongs to.

Owns the lookup from names, well-known recipient domains and MX host suffixes to a profile
name, with ``"generic"`` as the answer for anything unknown. No DNS, no IO: resolving a
domain's MX is the delivery layer's job; it hands the MX host name in here.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.policy.types import ProviderProfile

__all__ = ["GENERIC", "ProviderMatcher"]

GENERIC = "generic"


def _clean(value: str) -> str:
    """Lower-case, strip spaces, a trailing root dot, and anything before an ``@``."""
    out = value.strip().lower().rstrip(".")
    if "@" in out:
        out = out.rsplit("@", 1)[1]
    return out


class ProviderMatcher:
    """Match names, domains and MX hosts to provider profile names.

    MX suffixes match on a label boundary (``.google.com`` matches ``aspmx.l.google.com``
    and ``google.com`` itself); the longest suffix wins, so a more specific profile
    (``.mail.protection.outlook.com``) beats a shorter one.
    """

    __slots__ = ("_by_domain", "_names", "_suffixes")

    def __init__(self, profiles: Mapping[str, ProviderProfile]) -> None:
        self._names = frozenset(profiles)
        self._by_domain: dict[str, str] = {}
        suffixes: list[tuple[str, str]] = []
        for name, profile in profiles.items():
            for domain in profile.domains:
                self._by_domain.setdefault(_clean(domain), name)
            for suffix in profile.mx_suffixes:
                bare = _clean(suffix).lstrip(".")
                if bare:
                    suffixes.append((bare, name))
        suffixes.sort(key=lambda item: len(item[0]), reverse=True)
        self._suffixes = tuple(suffixes)

    @property
    def names(self) -> frozenset[str]:
        """The profile names this matcher knows."""
        return self._names

    def by_mx(self, host: str) -> str:
        """The provider whose MX suffix ends ``host`` (longest suffix first), else "generic"."""
        h = _clean(host)
        for bare, name in self._suffixes:
            if h == bare or h.endswith("." + bare):
                return name
        return GENERIC

    def by_domain(self, domain: str) -> str:
        """The provider of a well-known recipient domain (or an address), else "generic"."""
        return self._by_domain.get(_clean(domain), GENERIC)

    def resolve(self, name_or_domain_or_mx: str) -> str:
        """A profile name, a recipient domain or address, or an MX host -> profile name.

        Tries, in order: a profile name, a well-known domain, an MX suffix; else "generic".
        """
        value = _clean(name_or_domain_or_mx)
        if value in self._names:
            return value
        found = self._by_domain.get(value)
        if found is not None:
            return found
        return self.by_mx(value)

    def known(self, name_or_domain_or_mx: str) -> bool:
        """True when ``resolve`` finds a real profile (or the value names "generic" itself)."""
        value = _clean(name_or_domain_or_mx)
        return value in self._names or self.resolve(value) != GENERIC
