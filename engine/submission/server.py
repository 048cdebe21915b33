"""The SMTP submission server (aiosmtpd): STARTTLS, then AUTH, then the spool.

Owns the SMTP surface of intake. Rules: STARTTLS is required before anything but EHLO /
NOOP / QUIT (AUTH before it is refused); AUTH PLAIN or LOGIN with the tenant's API key as
password (checked against the config's hashed keys; the login may name the tenant) is
required before MAIL (``530 5.7.0``); the header From must be a sending domain of that
tenant (otherwise ``550 5.7.1``: never an open relay). A message is stored with
``Spool.accept`` keyed by its Message-ID (the same key and bytes again returns the first
id, other bytes under that key ``550 5.7.0``); headers the engine sets per recipient are
dropped from the stored base. ``X-Inboxlab-Lane`` / ``X-Inboxlab-Campaign`` choose lane
and campaign. It does not send mail or decide policy.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import ssl
from collections.abc import Callable
from email.utils import getaddresses
from typing import Any

from engine.config import LabConfig, hash_key
from engine.errors import InputError
from engine.spool import IdempotencyConflict, Spool

MAX_SIZE = 25 * 1024 * 1024
_DROP = {b"to", b"cc", b"bcc", b"date", b"message-id", b"return-path", b"dkim-signature",
         b"list-unsubscribe", b"list-unsubscribe-post", b"feedback-id", b"x-inboxlab-lane",
         b"x-inboxlab-campaign"}
_LANES = ("transactional", "lifecycle", "prospecting")
_CAMPAIGN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def split_headers(raw: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """(header fields as (name, full field bytes incl. folded lines), body) of ``raw``."""
    data = raw.replace(b"\r\n", b"\n")
    head, sep, body = data.partition(b"\n\n")
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, text = fields[-1]
            fields[-1] = (name, text + b"\r\n" + line)
        elif b":" in line:
            fields.append((line.split(b":", 1)[0].strip().lower(), line))
    return fields, body.replace(b"\n", b"\r\n") if sep else b""


def _value(fields: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for n, text in fields:
        if n == name:
            return text.split(b":", 1)[1].replace(b"\r\n", b"").strip().decode(
                "utf-8", "replace")
    return None


class SubmissionServer:
    """``await start()`` in the running loop (returns the port); ``await close()``."""

    def __init__(self, config: LabConfig, spool: Spool, tls: ssl.SSLContext, *,
                 host: str = "127.0.0.1", port: int = 0, hostname: str = "submission.local",
                 on_accept: Callable[[], None] | None = None, max_active: int = 1_000_000
                 ) -> None:
        self.config = config
        self.spool = spool
        self.tls = tls
        self.host = host
        self.port = port
        self.hostname = hostname
        self.on_accept = on_accept
        self.max_active = max_active
        self.keys = {h: t for t, m in config.tenants.items() for h in m.api_keys}
        self.server: asyncio.AbstractServer | None = None
        self.accepted = 0

    # -- auth -------------------------------------------------------------------------------
    def authenticate(self, login: str, password: str) -> str | None:
        """The tenant whose API key ``password`` is (and whom ``login`` names, if it names
        a tenant), else None."""
        if not password:
            return None
        digest = hash_key(password)
        tenant = next((t for h, t in self.keys.items() if hmac.compare_digest(h, digest)),
                      None)
        if tenant is None or (login in self.config.tenants and login != tenant):
            return None
        return tenant

    def _authenticator(self, server: Any, session: Any, envelope: Any, mechanism: str,
                       auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if mechanism not in ("PLAIN", "LOGIN") or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        tenant = self.authenticate(auth_data.login.decode("utf-8", "replace"),
                                   auth_data.password.decode("utf-8", "replace"))
        if tenant is None:
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=tenant)

    # -- messages ---------------------------------------------------------------------------
    def accept(self, tenant: str, raw: bytes, rcpts: list[str]) -> str:
        """Store one submitted message; returns the SMTP reply."""
        fields, body = split_headers(raw)
        from_value = _value(fields, b"from") or ""
        addrs = [a for _, a in getaddresses([from_value]) if "@" in a]
        if len(addrs) != 1:
            return "550 5.6.0 exactly one From address is required"
        domain = addrs[0].rsplit("@", 1)[1].lower()
        model = self.config.domains.get(domain)
        if model is None or model.tenant != tenant:
            return f"550 5.7.1 {domain} is not a sending domain of this account"
        lane = (_value(fields, b"x-inboxlab-lane") or "transactional").lower()
        if lane not in _LANES or lane not in self.config.tenants[tenant].lanes:
            return f"550 5.7.1 lane {lane} is not enabled for this account"
        campaign = _value(fields, b"x-inboxlab-campaign")
        if campaign is not None and not _CAMPAIGN.match(campaign):
            return "550 5.6.0 X-Inboxlab-Campaign must be 1-64 of A-Z a-z 0-9 . _ -"
        msgid = _value(fields, b"message-id")
        key = ("smtp:" + msgid) if msgid else ("smtp-sha256:" + hashlib.sha256(raw).hexdigest())
        base = b"".join(text + b"\r\n" for n, text in fields if n not in _DROP) + b"\r\n" + body
        try:
            acc = self.spool.accept(tenant=tenant, idem_key=key[:200], request=raw, lane=lane,
                                    campaign=campaign, sending_domain=domain,
                                    mail_from=addrs[0], recipients=rcpts, body=base,
                                    max_active=self.max_active)
        except IdempotencyConflict:
            return "550 5.7.0 this Message-ID was already used for another message"
        except InputError as exc:
            if "full" in str(exc):
                return "452 4.3.1 spool full, try again later"
            return f"550 5.6.0 {exc}"
        if acc.created:
            self.accepted += 1
            if self.on_accept is not None:
                self.on_accept()
        return f"250 2.0.0 queued as {acc.public_id}"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        tenant = session.auth_data if session.authenticated else None
        if not isinstance(tenant, str):
            return "530 5.7.0 Authentication required"
        raw = envelope.original_content or envelope.content
        return self.accept(tenant, bytes(raw), list(envelope.rcpt_tos))

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> int:
        """Listen; returns the bound port."""
        from aiosmtpd.smtp import SMTP

        def factory() -> Any:
            return SMTP(self, hostname=self.hostname, tls_context=self.tls,
                        require_starttls=True, auth_required=True, auth_require_tls=True,
                        authenticator=self._authenticator, data_size_limit=MAX_SIZE,
                        decode_data=False)

        self.server = await asyncio.get_running_loop().create_server(factory, self.host,
                                                                     self.port)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        """Stop listening."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
