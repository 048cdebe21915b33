"""Plain data that flows in and out of a provider model.

Owns the frozen value types of the model's interface: the SMTP ``Reply`` it answers
with, the ``MessageFacts`` a caller hands over at end of DATA, the delayed
``Consequence`` objects (complaint, DSN bounce, engagement, trap hit) and the
``Outcome`` of one message. ``Session`` is the one mutable record: the model's view of
one SMTP connection. No IO, no clock, no randomness here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Stage = Literal["connect", "helo", "mail", "rcpt", "data"]
ConsequenceKind = Literal["complaint", "bounce", "engagement", "trap_hit"]


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: basic code, enhanced status code ("" if none) and text."""

    code: int
    enhanced: str
    text: str
    kind: str = "ok"  # the model's name for why it answered so (e.g. "rate_ip")

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def line(self) -> str:
        """The reply as one SMTP line, without CRLF (multi-line texts are folded)."""
        text = " ".join(self.text.split())
        if self.enhanced:
            return f"{self.code} {self.enhanced} {text}".rstrip()
        return f"{self.code} {text}".rstrip()


@dataclass(slots=True)
class Session:
    """The model's record of one SMTP connection (created by ``ProviderModel.connect``)."""

    id: int
    source_ip: str
    netblock: str
    opened: float
    tls: bool = False
    helo: str = ""
    mail_from: str | None = None
    recipients: list[str] = field(default_factory=list)
    messages: int = 0
    closed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageFacts:
    """What a receiver knows about a message at end of DATA.

    ``dkim_domain`` is the d= of a *passing* DKIM signature (None when unsigned or
    failing); ``spf_domain``/``spf_pass`` are the MAIL FROM domain and its SPF result.
    ``dmarc_record`` says whether the From domain (or its organizational domain) publishes
    a DMARC record; DMARC passes when it does and SPF or DKIM passes aligned with From.
    ``ref`` is an opaque handle of the caller (a stored file, a simulated message id)
    carried unchanged into every consequence.
    """

    mail_from: str
    recipients: tuple[str, ...]
    message_id: str = ""
    dkim_domain: str | None = None
    spf_domain: str | None = None
    spf_pass: bool = False
    from_domain: str = ""
    dmarc_record: bool = True
    link_domains: tuple[str, ...] = ()
    lane: str = "lifecycle"
    size: int = 0
    ref: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Consequence:
    """Something the provider does later because of an accepted message.

    ``report`` says whether the provider tells the sender (an ARF report through its
    feedback loop for a complaint, an RFC 3464 DSN for a bounce). ``status`` and
    ``text`` describe a bounce.
    """

    kind: ConsequenceKind
    at: float
    provider: str
    recipient: str
    message_id: str
    source_ip: str
    mail_from: str
    dkim_domain: str | None = None
    report: bool = False
    status: str = ""
    text: str = ""
    ref: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end-of-DATA reply and the consequences scheduled by accepting the message."""

    reply: Reply
    consequences: tuple[Consequence, ...] = ()


@dataclass(slots=True, init=False)
class BatchReplies:
    """A batch's end-of-transaction replies, compactly (``ProviderModel.deliver_batch``).

    Per message: ``codes[i]`` (basic code) and ``text_ids[i]`` (index into ``lines``,
    ``enhanced`` and ``kinds``: the full SMTP line, its enhanced code and the model's name
    for the reply); ``accepted`` marks 2xx. ``consequences`` counts what was scheduled.
    The arrays of a one-message result are shared and read-only: copy before writing.
    """

    codes: Any  # numpy int32 array
    text_ids: Any  # numpy int32 array
    lines: list[str]
    enhanced: list[str]
    kinds: list[str]
    consequences: int = 0

    # written out (``init=False``): compiled, a hand-written ``__init__`` is native code,
    # where the dataclass-generated one would run as Python for every dispatch
    def __init__(self, codes: Any, text_ids: Any, lines: list[str], enhanced: list[str],
                 kinds: list[str], consequences: int = 0) -> None:
        self.codes = codes
        self.text_ids = text_ids
        self.lines = lines
        self.enhanced = enhanced
        self.kinds = kinds
        self.consequences = consequences

    def line(self, i: int) -> str:
        """The reply line of message ``i``."""
        return self.lines[int(self.text_ids[i])]
