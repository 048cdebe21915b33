"""``inboxlab dns``: the loopback authoritative DNS server, lab zones and auth checks.

``dns serve`` runs ``sim.dns.server`` until SIGTERM/Ctrl-C, ``dns zone`` prints the zone a
lab config implies (``sim.dns.zone``), ``dns check`` asks a server for SPF and DMARC
(``sim.dns.auth``). Bad input raises ``InputError`` / ``ConfigError`` for the CLI edge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    dns_app = typer.Typer(help="A real authoritative DNS server on loopback, lab zones and "
                               "DNS-backed SPF/DKIM/DMARC checks.", no_args_is_help=True)
    app.add_typer(dns_app, name="dns")

    @dns_app.command("serve")
    def serve(
        zone: Annotated[list[Path] | None, typer.Option(
            "--zone", help="RFC 1035 master file (repeat for several zones).")] = None,
        config: Annotated[Path | None, typer.Option(
            "--config", help="Also serve the zone of this lab config.")] = None,
        host: Annotated[str, typer.Option("--host", help="127.0.0.0/8 address.")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", min=0, max=65535,
                                          help="UDP and TCP port; 0 picks a free one.")] = 0,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Answer DNS queries over UDP and TCP until SIGTERM or Ctrl-C."""
        import asyncio
        import json
        import signal
        import sys

        from engine.errors import InputError
        from sim.dns.authority import load_zone, zone_from_text
        from sim.dns.server import DnsServer

        zones = [load_zone(path) for path in zone or []]
        if config is not None:
            zones.append(zone_from_text(_lab_zone_text(config), file=str(config)))
        if not zones:
            raise InputError("nothing to serve: give --zone FILE (or --config LAB.toml)")
        server = DnsServer(zones, host=host, port=port)

        async def main() -> None:
            try:
                h, p = await server.start()
            except OSError as exc:
                raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") \
                    from None
            origins = server.authority.origins()
            if as_json:
                typer.echo(json.dumps({"dns": f"{h}:{p}", "zones": origins}))
            else:
                typer.echo(f"dns → {h}:{p} (udp+tcp), zones: {', '.join(origins)}")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            await server.stop()
            print(f"dns: stopped after {server.udp_queries} udp and {server.tcp_queries} tcp "
                  f"queries", file=sys.stderr)

        asyncio.run(main())

    @dns_app.command("zone")
    def zone_cmd(
        config: Annotated[Path, typer.Option("--config", help="Lab config TOML.")],
        out: Annotated[Path | None, typer.Option("--out", help="Write here, not stdout.")] = None,
        origin: Annotated[str | None, typer.Option(
            "--origin", help="Zone origin (default: the common parent of the names).")] = None,
    ) -> None:
        """Print the zone a lab publishes: DKIM keys, SPF, DMARC, MX, SOA/NS."""
        from engine.errors import InputError

        text = _lab_zone_text(config, origin)
        if out is None:
            typer.echo(text, nl=False)
            return
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None
        typer.echo(f"wrote {out}")

    @dns_app.command("check")
    def check(
        server: Annotated[str, typer.Option("--server", help="Nameserver HOST:PORT.")],
        mail_from: Annotated[str, typer.Option("--mail-from", help="The MAIL FROM address.")],
        ip: Annotated[str, typer.Option("--ip", help="The sending (client) IP address.")],
        from_domain: Annotated[str | None, typer.Option(
            "--from-domain", help="The From: domain (default: the MAIL FROM domain).")] = None,
        helo: Annotated[str, typer.Option("--helo", help="The HELO/EHLO name.")] = "",
        timeout: Annotated[float, typer.Option("--timeout", min=0.05,
                                               help="Seconds per lookup.")] = 2.0,
    ) -> None:
        """Check SPF for (MAIL FROM, IP) and the From domain's DMARC; print JSON."""
        import json

        from engine.errors import InputError
        from sim.dns.auth import DnsAuth, dmarc_alignment
        from sim.dns.spf import parse_ip

        try:
            parse_ip(ip)
        except ValueError:
            raise InputError(f"--ip {ip!r} is not an IP address") from None
        auth = DnsAuth(server, timeout=timeout)
        spf = auth.spf_check(mail_from, helo, ip)
        domain = (from_domain or spf.domain).strip().rstrip(".").lower()
        record = auth.dmarc(domain)
        align = dmarc_alignment(domain, record, spf_domain=spf.domain,
                                spf_pass=spf.result == "pass", dkim_domain=None)
        typer.echo(json.dumps({
            "spf": {"result": spf.result, "domain": spf.domain, "reason": spf.reason,
                    "lookups": spf.lookups, "void_lookups": spf.void_lookups},
            "dmarc": {"from_domain": domain, "record": record,
                      "spf_aligned": align["spf_aligned"],
                      "pass_by_spf": align["pass"]},
        }, sort_keys=False))


def _lab_zone_text(config: Path, origin: str | None = None) -> str:
    from engine.config import load_config
    from engine.errors import InputError
    from sim.dns.zone import lab_zone

    if not config.is_file():
        raise InputError(f"--config {config}: no such file")
    return lab_zone(load_config(config), origin=origin)
