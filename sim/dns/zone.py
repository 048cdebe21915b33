"""The DNS zone a lab config implies: what its sending domains must publish.

Owns ``lab_zone(config) -> str`` (an RFC 1035 master file) and the record builders
``dkim_record`` / ``spf_record`` / ``dmarc_record``. For each sending domain:

- DKIM (RFC 6376 §3.6.1): TXT ``v=DKIM1; k=rsa; p=<base64 of the SubjectPublicKeyInfo DER>``
  at ``<selector>._domainkey.<domain>``; Ed25519 keys (RFC 8463 §4) publish ``k=ed25519``
  with ``p=`` the base64 of the raw 32-byte public key. The record is the engine signer's
  own (``engine.dkim.sign.public_key_record``) for each key file (relative to the config).
- SPF (RFC 7208): ``v=spf1 ip4:... ip6:... -all`` listing every pool's source IPs, on the
  From domain and on its Return-Path domain.
- DMARC (RFC 7489 §6.3): ``v=DMARC1; p=reject; adkim=r; aspf=r; rua=mailto:dmarc@<return
  path>`` at ``_dmarc.<domain>`` (the inbound server accepts mail for return-path domains).
- MX (RFC 5321 §5.1) of the Return-Path domain: the inbound host (``[serve.inbound]``
  ``hostname`` when it lies inside the zone, else ``inbound.<origin>``) with its A record.

The zone's origin is the longest common parent of those names unless one is given; an SOA
and NS (``ns1.<origin>``, A 127.0.0.1) open it. TXT strings longer than 255 bytes are split
into several strings (RFC 1035 §3.3.14; RFC 7208 §3.3 and RFC 6376 §3.6.2.2 join them
without spaces). The output depends only on the config: the SOA serial is a digest of the
records. Reads key files; never writes, never opens a socket.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from pathlib import Path
from typing import Literal

from engine.config import LabConfig
from engine.errors import InputError

TTL = 3600  # records of the lab's domains
NEGATIVE_TTL = 300  # SOA MINIMUM: how long resolvers cache NXDOMAIN/NODATA (RFC 2308 §4)
TXT_CHUNK = 255  # RFC 1035 §3.3.14: a <character-string> is at most 255 bytes


def public_key_record(key_file: Path, algorithm: str, domain: str = "", selector: str = "") -> str:
    """``v=DKIM1; k=...; p=...`` for the private key in ``key_file`` (the engine signer's own
    record, ``engine.dkim.sign.public_key_record``). Raises ``ConfigError``."""
    from engine.dkim.sign import load_signer
    from engine.dkim.sign import public_key_record as record_of

    alg: Literal["rsa-sha256", "ed25519-sha256"] = (
        "ed25519-sha256" if algorithm.startswith("ed25519") else "rsa-sha256")
    return record_of(load_signer(domain, selector, key_file, alg))


def dkim_record(kind: str, public: bytes) -> str:
    return f"v=DKIM1; k={kind}; p={base64.b64encode(public).decode('ascii')}"


def spf_record(ips: list[str]) -> str:
    """``v=spf1 ip4:a ip6:b -all`` (addresses in the order given, each once)."""
    terms = []
    for ip in dict.fromkeys(ips):
        addr = ipaddress.ip_address(ip)
        terms.append(f"ip{addr.version}:{addr.compressed}")
    return " ".join(["v=spf1", *terms, "-all"])


def dmarc_record(rua_domain: str, policy: str = "reject") -> str:
    return f"v=DMARC1; p={policy}; adkim=r; aspf=r; rua=mailto:dmarc@{rua_domain}"


def txt_rdata(text: str) -> str:
    """``text`` as master-file TXT rdata: quoted strings of at most 255 bytes each."""
    raw = text.encode("ascii")
    chunks = [raw[i: i + TXT_CHUNK] for i in range(0, len(raw), TXT_CHUNK)] or [b""]
    quoted = ['"' + c.decode().replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks]
    return quoted[0] if len(quoted) == 1 else "( " + " ".join(quoted) + " )"


def _parent(names: list[str]) -> str:
    split = [n.split(".") for n in names]
    common: list[str] = []
    for labels in zip(*(reversed(s) for s in split), strict=False):
        if len(set(labels)) != 1:
            break
        common.append(labels[0])
    return ".".join(reversed(common))


def _inside(name: str, origin: str) -> bool:
    return origin == "" or name == origin or name.endswith("." + origin)


def lab_zone(config: LabConfig, *, origin: str | None = None, ns_address: str = "127.0.0.1",
             mx_host: str | None = None) -> str:
    """The master file for ``config``'s sending domains. Raises ``InputError`` when the
    names share no parent and no ``origin`` is given, or a name lies outside ``origin``."""
    base = Path(config.file).parent
    ips = [ip for pool in config.pools.values() for ip in pool.source_ips]
    spf = spf_record(ips) if ips else "v=spf1 -all"
    domains = sorted(config.domains)
    if not domains:
        raise InputError(f"{config.file}: no sending domains: nothing to publish")
    owners = [d.lower() for d in domains] + [
        (config.domains[d].return_path or d).lower() for d in domains]
    if origin is None:
        origin = _parent(owners)
        if not origin:
            raise InputError("the lab's domains share no parent domain: pass an origin")
    origin = origin.lower().strip(".")
    outside = [n for n in owners if not _inside(n, origin)]
    if outside:
        raise InputError(f"{outside[0]} is not inside the zone {origin or '.'}")
    inbound = config.serve.inbound
    if mx_host is None:
        mx_host = inbound.hostname.lower() if _inside(inbound.hostname.lower(), origin) \
            else f"inbound.{origin}".strip(".")
    try:
        inbound_ip = str(ipaddress.ip_address(inbound.host))
        if ipaddress.ip_address(inbound_ip).is_unspecified:
            inbound_ip = "127.0.0.1"
    except ValueError:
        inbound_ip = "127.0.0.1"

    records: dict[tuple[str, str], list[str]] = {}
    comments: dict[tuple[str, str], str] = {}

    def add(owner: str, rtype: str, rdata: str, comment: str = "") -> None:
        rows = records.setdefault((owner, rtype), [])
        if rdata not in rows:
            rows.append(rdata)
        if comment and (owner, rtype) not in comments:
            comments[(owner, rtype)] = comment

    for name in domains:
        dom = config.domains[name]
        d = name.lower()
        rp = (dom.return_path or name).lower()
        for dk in dom.dkim:
            add(f"{dk.selector}._domainkey.{d}", "TXT",
                txt_rdata(public_key_record(base / dk.key_file, dk.algorithm, d, dk.selector)),
                f"DKIM {dk.algorithm} key of {d} ({dk.key_file})")
        add(d, "TXT", txt_rdata(spf), f"SPF of the From domain {d} (tenant {dom.tenant})")
        add(f"_dmarc.{d}", "TXT", txt_rdata(dmarc_record(rp)), f"DMARC of {d}")
        add(rp, "TXT", txt_rdata(spf), f"SPF of the Return-Path domain of {d}")
        add(rp, "MX", f"10 {mx_host}.", f"bounces for {d} go to the inbound server")
    if _inside(mx_host, origin):
        add(mx_host, "A", inbound_ip, "the inbound server ([serve.inbound])")

    body = []
    for (owner, rtype), rows in records.items():
        if (owner, rtype) in comments:
            body.append(f"; {comments[(owner, rtype)]}")
        body.extend(f"{owner}. {TTL} IN {rtype} {rdata}" for rdata in rows)
    serial = int.from_bytes(hashlib.sha256("\n".join(body).encode()).digest()[:4]) % 2**31 or 1
    apex = f"{origin}." if origin else "."
    ns = f"ns1.{apex}".replace("..", ".")
    rname = f"hostmaster.{apex}".replace("..", ".")
    head = [
        f"; The DNS zone of lab {config.name!r} ({config.file}), made by `inboxlab dns zone`.",
        "; Regenerate it rather than edit it. Serve it with `inboxlab dns serve --zone FILE`.",
        f"$ORIGIN {apex}",
        f"$TTL {TTL}",
        f"{apex} {TTL} IN SOA {ns} {rname} ( {serial} 3600 600 1209600 {NEGATIVE_TTL} )",
        f"{apex} {TTL} IN NS {ns}",
        f"{ns} {TTL} IN A {ns_address}",
        "",
    ]
    return "\n".join(head + body) + "\n"
