"""The sending engine; its policy core runs compiled when a matching build exists
(``engine.native``: checked against the sources at import, interpreted otherwise)."""

from engine import native as _native

_native.install()
