"""``[serve] tls_ca_file``: the certificates the engine trusts for STARTTLS, lab-relative,
``${ENV}`` expanded, checked at load (file, key and reason on a bad one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import ConfigErrors
from tests.integration.test_serve_pg_parts import _lab


def _cert(path: Path) -> Path:
    from sim.sandbox.tls import server_context

    server_context(path.parent, "relay.example", ["127.0.0.1"])
    return path.parent / "sandbox-cert.pem"


def test_ca_file_is_resolved_and_checked(tmp_path: Path) -> None:
    cert = _cert(tmp_path / "certs" / "x")
    rel = load_config(_lab(tmp_path, 'tls_ca_file = "certs/sandbox-cert.pem"'), env={})
    assert rel.serve.tls_ca_file == str(tmp_path / "certs" / "sandbox-cert.pem")
    via_env = load_config(_lab(tmp_path, 'tls_ca_file = "${CA}"'), env={"CA": str(cert)})
    assert via_env.serve.tls_ca_file == str(cert)
    unset = load_config(_lab(tmp_path, 'tls_ca_file = "${CA:-}"'), env={})
    assert unset.serve.tls_ca_file is None  # the system store
    (tmp_path / "junk.pem").write_text("not a certificate")
    for value, says in (('"nope.pem"', "No such file"), ('"junk.pem"', "not a readable PEM")):
        with pytest.raises(ConfigErrors) as info:
            load_config(_lab(tmp_path, f"tls_ca_file = {value}"), env={})
        [p] = info.value.problems
        assert p.key == "serve.tls_ca_file" and says in p.reason, p
