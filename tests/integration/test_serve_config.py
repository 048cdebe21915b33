"""``[serve]`` in the lab config (located errors, certificate files) and the one-line errors
of ``inboxlab serve`` (a busy port, a missing webhook secret) -- the process starts nothing
and changes nothing in its home when it refuses."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.config import load_config
from engine.errors import ConfigErrors
from engine.submission.tls import self_signed_context

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
FX = ROOT / "fixtures"


def lab(tmp: Path, serve: str, webhook: bool = False) -> Path:
    hook = ('webhook_url = "http://127.0.0.1:9/h"\nwebhook_secret = "env:H6_MISSING_SECRET"\n'
            if webhook else "")
    path = tmp / "lab.toml"
    path.write_text(f"""
policy = "{FX / 'policies' / 'default-v1.toml'}"
[tenants.acme]
{hook}
[domains."mail.acme.example"]
tenant = "acme"
return_path = "bounce.mail.acme.example"
[pools.tx-a]
source_ips = ["127.0.0.2"]
[routes]
"*" = "127.0.0.1:9"
{serve}
""")
    return path


def reasons(path: Path) -> dict[str, str]:
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    return {p.key: p.reason for p in info.value.problems}


def test_defaults_when_there_is_no_serve_section(tmp_path: Path) -> None:
    cfg = load_config(lab(tmp_path, ""))
    assert (cfg.serve.host, cfg.serve.http_port) == ("127.0.0.1", 8025)
    assert cfg.serve.inbound.enabled and cfg.serve.inbound.port == 0
    assert cfg.serve.submission.cert_file is None
    assert cfg.serve.webhooks.poll == 0.5


def test_serve_values_parse(tmp_path: Path) -> None:
    cfg = load_config(lab(tmp_path, """
[serve]
http_port = 9100
[serve.inbound]
port = 2526
feedback_domains = ["FBL.Acme.Example."]
[serve.webhooks]
poll = "250ms"
drain = "2s"
"""))
    assert cfg.serve.http_port == 9100 and cfg.serve.inbound.port == 2526
    assert cfg.serve.inbound.feedback_domains == ["fbl.acme.example"]
    assert (cfg.serve.webhooks.poll, cfg.serve.webhooks.drain) == (0.25, 2.0)


def test_every_serve_problem_is_located(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    got = reasons(lab(tmp_path, """
[serve]
host = "my host"
http_port = 2525
colour = "blue"
[serve.inbound]
port = 2525
feedback_domains = ["ok.example", "not a domain", "ok.example"]
[serve.submission]
port = 70000
cert_file = "junk.pem"
[serve.webhooks]
poll = "soon"
"""))
    assert "not an IP address" in got["serve.host"]
    assert got["serve.colour"] == "unknown key"
    assert "is not a valid domain name" in got["serve.inbound.feedback_domains[1]"]
    assert "less than or equal to 65535" in got["serve.submission.port"]
    assert "given together" in got["serve.submission.key_file"]
    assert "not a PEM certificate" in got["serve.submission.cert_file"]
    assert "is not a duration" in got["serve.webhooks.poll"]
    # the bad host pruned [serve] to its valid rest, so the cross checks still ran:
    assert "also serve.http_port" in got["serve.inbound.port"]
    assert got["serve.inbound.feedback_domains"] == "ok.example is listed twice"


def test_certificate_files_from_the_config_are_used(tmp_path: Path) -> None:
    self_signed_context(tmp_path / "pki", "mx.acme.example")  # writes a real cert + key
    cfg = load_config(lab(tmp_path, """
[serve.submission]
cert_file = "pki/submission.crt"
key_file = "pki/submission.key"
"""))
    assert cfg.serve.submission.cert_file == "pki/submission.crt"
    missing = reasons(lab(tmp_path, """
[serve.submission]
cert_file = "pki/nope.crt"
key_file = "pki/submission.key"
"""))
    assert "does not exist" in missing["serve.submission.cert_file"]


def _serve(path: Path, home: Path, *args: str, env: dict[str, str] | None = None
           ) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "inboxlab", "serve", "--config", str(path), "--home",
         str(home), *args], env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_busy_port_is_one_line_and_leaves_the_home_alone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _serve(lab(tmp_path, ""), home, "--port", str(port))
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    lines = err.decode().strip().splitlines()
    assert lines == [f"inboxlab: error: cannot listen for HTTP intake on 127.0.0.1:{port}: "
                     "Address already in use"], err
    assert not home.exists()  # nothing was created: no secret, no certificate, no spool


def test_submission_uses_the_configured_certificate(tmp_path: Path) -> None:
    import ssl

    self_signed_context(tmp_path / "pki", "mx.acme.example")
    path = lab(tmp_path, """
[serve.submission]
cert_file = "pki/submission.crt"
key_file = "pki/submission.key"
hostname = "mx.acme.example"
""")
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    http = port.getsockname()[1]
    port.close()
    proc = _serve(path, tmp_path / "home", "--port", str(http), "--json",
                  "--inbound-port", "0")
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        where: dict[str, Any] = json.loads(proc.stdout.readline() if ready else b"{}")
        assert where["certificate"] == str(tmp_path / "pki" / "submission.crt")
        assert not (tmp_path / "home" / "submission.crt").exists()  # none generated
        host, sport = where["submission"].rsplit(":", 1)
        ctx = ssl.create_default_context(cafile=str(tmp_path / "pki" / "submission.crt"))
        ctx.check_hostname = False
        import smtplib

        with smtplib.SMTP(host, int(sport), timeout=10) as s:
            s.starttls(context=ctx)  # verifies against the configured certificate
            assert s.ehlo()[0] == 250
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_required_webhook_secret_missing_is_one_located_line(tmp_path: Path) -> None:
    path = lab(tmp_path, "[serve.webhooks]\nrequire_secrets = true\n", webhook=True)
    proc = _serve(path, tmp_path / "home", "--port", "1")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    text = err.decode().strip()
    assert len(text.splitlines()) == 1 and "tenants.acme.webhook_secret" in text, text
    assert "env:H6_MISSING_SECRET is not set" in text
