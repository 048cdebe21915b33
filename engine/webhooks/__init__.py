"""Webhooks: each tenant's events pushed to its endpoint from the durable outbox.

``engine.webhooks.sign`` signs and verifies (``X-Inboxlab-Signature: t=<ts>,v1=<hex>``,
HMAC-SHA256 over ``"<ts>." + body``); ``engine.webhooks.deliver`` holds the per-endpoint
cursor in the spool database and delivers in order with retries and exponential backoff
(at-least-once, never out of order). Nothing here decides policy or moves a message.
"""

from engine.webhooks.deliver import Endpoint, WebhookDispatcher, endpoints_from_config
from engine.webhooks.sign import SIGNATURE_HEADER, resolve_secret, sign, verify

__all__ = ["SIGNATURE_HEADER", "Endpoint", "WebhookDispatcher", "endpoints_from_config",
           "resolve_secret", "sign", "verify"]
