"""Inbound feedback: an SMTP receiver for bounces and feedback-loop (ARF) reports.

``engine.inbound.process.FeedbackProcessor`` maps one received message to its spool message
and recipient (HMAC-checked VERP Return-Path, or our Message-ID), writes the ``bounced`` /
``complaint`` event and the suppression in one spool transaction, and hands a ``Signal``
to the policy core through ``on_signal``. ``engine.inbound.server`` is the aiosmtpd
receiver (accepts only the configured bounce / feedback domains, never relays). Parsing is
``engine.feedback``; nothing here decides policy.
"""

from engine.inbound.process import FeedbackProcessor, Outcome, feedback_domains
from engine.inbound.server import InboundServer

__all__ = ["FeedbackProcessor", "InboundServer", "Outcome", "feedback_domains"]
