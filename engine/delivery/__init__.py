"""The delivery side of the live engine: message building, MX resolution, SMTP sending.

``message`` builds headers and tokens, ``mx`` resolves destinations, ``pipeline`` is our
asyncio SMTP client (PIPELINING, STARTTLS), ``smtp`` holds the connection pools. The loop that drives the
policy core is ``engine.runner``.
"""
