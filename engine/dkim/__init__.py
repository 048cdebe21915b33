"""DKIM signing (RFC 6376) with rsa-sha256 and ed25519-sha256 (RFC 8463), relaxed/relaxed.

Owns canonicalisation (``engine.dkim.canon``) and signature assembly (``engine.dkim.sign``),
written on ``cryptography`` directly for speed. Verification is left to receivers (tests use
dkimpy as the independent verifier). It must not touch the spool, the network or DNS.
"""

from engine.dkim.canon import relaxed_body, relaxed_header, split_message
from engine.dkim.sign import OVERSIGN, DkimSigner, load_signer, public_key_record

__all__ = [
    "OVERSIGN",
    "DkimSigner",
    "load_signer",
    "public_key_record",
    "relaxed_body",
    "relaxed_header",
    "split_message",
]
