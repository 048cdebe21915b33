"""SMTP submission in: authenticated clients hand messages to the spool over SMTP.

``engine.submission.tls`` makes (or loads) the STARTTLS certificate;
``engine.submission.server`` is the aiosmtpd server (STARTTLS then AUTH PLAIN/LOGIN
required, tenant API key as password, never an open relay). Accepted messages go into the
same spool with the same idempotency rules as the HTTP intake (Message-ID as the key).
"""

from engine.submission.server import SubmissionServer
from engine.submission.tls import self_signed_context

__all__ = ["SubmissionServer", "self_signed_context"]
