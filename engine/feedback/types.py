"""Result types of feedback parsing: one DSN, one ARF report, or "unknown" with a reason.

Owns the shape of a parsed bounce or complaint and its JSON form (``as_dict``), which is
the contract of ``inboxlab feedback parse``. Must not parse anything itself, and must
not touch IO, clocks or randomness.

Vocabulary (see the reference page "Feedback parsing"): a recipient is ``permanent``
exactly when its ``action`` is ``failed`` (even with a 4.x.x status after retries ran
out, RFC 3464 §10.1); ``delayed`` is never permanent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["dsn", "arf", "unknown"]

#: Actions a recipient of a DSN can carry (RFC 3464 §2.3.3).
ACTIONS: tuple[str, ...] = ("failed", "delayed", "delivered", "relayed", "expanded")

#: Feedback types of RFC 5965 §7.3 plus RFC 6591's auth-failure.
FEEDBACK_TYPES: tuple[str, ...] = (
    "abuse",
    "fraud",
    "virus",
    "other",
    "not-spam",
    "auth-failure",
)


def _drop_empty(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != [] and v != ""}


@dataclass(frozen=True, slots=True, kw_only=True)
class DsnRecipient:
    """One recipient of a delivery status notification."""

    recipient: str
    action: str
    status: str
    diagnostic: str | None = None
    original_recipient: str | None = None
    remote_mta: str | None = None
    last_attempt_date: str | None = None
    will_retry_until: str | None = None

    @property
    def permanent(self) -> bool:
        """True exactly when the action is ``failed``, whatever the status class."""
        return self.action == "failed"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: the contract keys always, optional ones when known."""
        out: dict[str, Any] = {
            "recipient": self.recipient,
            "action": self.action,
            "status": self.status,
            "permanent": self.permanent,
            "diagnostic": self.diagnostic,
        }
        out.update(
            _drop_empty(
                {
                    "original_recipient": self.original_recipient,
                    "remote_mta": self.remote_mta,
                    "last_attempt_date": self.last_attempt_date,
                    "will_retry_until": self.will_retry_until,
                }
            )
        )
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class DsnReport:
    """A bounce or delay notice: standard RFC 3464 or recovered from a plain-text notice.

    ``dialect`` says how it was read: ``rfc3464`` for a delivery-status part (also RFC
    6533 and mis-typed text parts), otherwise the name of the plain-text heuristic.
    ``original_*`` come from the returned copy of our message, when there is one.
    """

    kind: Literal["dsn"] = "dsn"
    recipients: tuple[DsnRecipient, ...]
    dialect: str
    reporting_mta: str | None = None
    received_from_mta: str | None = None
    arrival_date: str | None = None
    original_envelope_id: str | None = None
    original_message_id: str | None = None
    original_return_path: str | None = None
    original_to: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "recipients": [r.as_dict() for r in self.recipients],
        }
        out.update(
            _drop_empty(
                {
                    "dialect": self.dialect,
                    "reporting_mta": self.reporting_mta,
                    "received_from_mta": self.received_from_mta,
                    "arrival_date": self.arrival_date,
                    "original_envelope_id": self.original_envelope_id,
                    "original_message_id": self.original_message_id,
                    "original_return_path": self.original_return_path,
                    "original_to": self.original_to,
                }
            )
        )
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ArfReport:
    """A feedback report (RFC 5965), including auth-failure reports (RFC 6591).

    ``original_rcpt_to`` is a string, or a list when the report carries several
    ``Original-Rcpt-To`` fields. ``extra`` keeps the remaining report fields (lower-case
    names; RFC 6591 fields such as ``auth-failure`` or ``dkim-domain`` land here).
    """

    kind: Literal["arf"] = "arf"
    feedback_type: str
    user_agent: str | None = None
    version: str | None = None
    original_mail_from: str | None = None
    original_rcpt_to: str | list[str] | None = None
    arrival_date: str | None = None
    source_ip: str | None = None
    reported_domain: str | None = None
    reported_uri: tuple[str, ...] = ()
    authentication_results: str | None = None
    incidents: int | None = None
    original_message_id: str | None = None
    original_return_path: str | None = None
    original_to: str | None = None
    dialect: str = "arf"
    extra: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "feedback_type": self.feedback_type,
            "original_rcpt_to": self.original_rcpt_to,
            "original_mail_from": self.original_mail_from,
            "original_message_id": self.original_message_id,
            "source_ip": self.source_ip,
            "reported_domain": self.reported_domain,
            "user_agent": self.user_agent,
        }
        out.update(
            _drop_empty(
                {
                    "version": self.version,
                    "arrival_date": self.arrival_date,
                    "reported_uri": list(self.reported_uri),
                    "authentication_results": self.authentication_results,
                    "incidents": self.incidents,
                    "original_return_path": self.original_return_path,
                    "original_to": self.original_to,
                    "dialect": self.dialect,
                    "extra": dict(self.extra),
                }
            )
        )
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Unknown:
    """Input that is not a readable bounce or feedback report; ``reason`` says why."""

    kind: Literal["unknown"] = "unknown"
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "reason": self.reason}


Feedback = DsnReport | ArfReport | Unknown
