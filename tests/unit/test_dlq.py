"""Dead letters and replay: listing (redacted), show (attempt history), replay exactly once,
through the library, the CLI and POST /v1/replay."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from engine.config import load_config
from engine.errors import InputError
from engine.intake.app import create_app
from engine.spool import Spool
from engine.spool.dlq import DeadLetters, Filter, mask
from inboxlab.cli import app as cli_app
from inboxlab.cli import main

LAB = Path(__file__).parents[2] / "fixtures" / "lab.toml"
BODY = b"Subject: secret body text\r\n\r\nDo not show me\r\n"


def _fail(spool: Spool, tenant: str, campaign: str, rcpts: list[str], how: str,
          provider: str, key: str) -> list[int]:
    spool.accept(tenant=tenant, idem_key=key, request=key.encode(), lane="lifecycle",
                 campaign=campaign, sending_domain="mail.acme.example",
                 mail_from="n@mail.acme.example", recipients=rcpts, body=BODY)
    ids = [p.id for p in spool.take_pending()]
    for rid in ids:
        spool.start_attempts([rid], pool="tx-a", source_ip="127.0.0.2")
        spool.finish(rid, "deferred", event="deferred", code=451, response="4.7.0 try later",
                     pool="tx-a", provider=provider)
        spool.start_attempts([rid], pool="tx-a", source_ip="127.0.0.3")
        if how == "expired":
            spool.finish(rid, "expired", event="expired", reason="ttl 72h elapsed",
                         pool="tx-a", provider=provider)
        else:
            spool.finish(rid, "dead_lettered", event="dead_lettered", code=554,
                         response="5.7.1 blocked", reason="policy: permanent block",
                         pool="tx-a", provider=provider)
    return ids


@pytest.fixture
def spool(tmp_path: Path) -> Any:
    sp = Spool(tmp_path / "spool.db")
    _fail(sp, "acme", "wk1", ["ann@gmail.com", "bob@gmail.com"], "dead", "gmail", "k1")
    _fail(sp, "acme", "wk2", ["cat@yahoo.com"], "expired", "yahoo", "k2")
    _fail(sp, "globex", "g1", ["dan@gmail.com"], "dead", "gmail", "k3")
    yield sp
    sp.close()


def test_mask() -> None:
    assert mask("ann@example.net") == "a**@example.net"
    assert mask("alexander@x.org") == "a********@x.org"
    assert "ann" not in mask("ann@example.net")


def test_list_filters_and_redaction(spool: Spool) -> None:
    dlq = DeadLetters(spool)
    rows = dlq.list()
    assert len(rows) == 4
    assert all("@" in r.recipient and not r.recipient.startswith(("ann", "bob")) for r in rows)
    assert "Do not show" not in json.dumps([r.as_dict() for r in rows])
    assert [r.tenant for r in dlq.list(Filter(tenant="globex"))] == ["globex"]
    assert {r.state for r in dlq.list(Filter(provider="yahoo"))} == {"expired"}
    assert len(dlq.list(Filter(reason="PERMANENT"))) == 3
    assert dlq.list(Filter(campaign="wk1"))[0].pool == "tx-a"
    assert dlq.list(Filter(reason="ttl"))[0].reason == "ttl 72h elapsed"
    with pytest.raises(InputError):
        Filter(state="delivered")


def test_show_has_attempt_history_not_body(spool: Spool) -> None:
    dlq = DeadLetters(spool)
    rid = dlq.list(Filter(campaign="wk1"))[0].id
    shown = dlq.show(rid)
    assert shown["recipient"] == "ann@gmail.com"
    assert [a["code"] for a in shown["attempt_history"]] == [451, 554]
    assert [a["source_ip"] for a in shown["attempt_history"]] == ["127.0.0.2", "127.0.0.3"]
    assert shown["body"]["redacted"] and shown["body"]["bytes"] == len(BODY)
    assert "Do not show" not in json.dumps(shown)
    with pytest.raises(InputError):
        dlq.show(rid, tenant="globex")  # another tenant's dead letter


def test_replay_exactly_once(spool: Spool) -> None:
    dlq = DeadLetters(spool)
    f = Filter(tenant="acme", campaign="wk1")
    first = dlq.replay(f, pool="shared-c", not_before=2e9)
    assert len(first.replayed) == 2 and not first.already
    for rid in first.replayed:
        assert spool.state(rid) == ("queued", False)
    pend = {p.id: p for p in spool.take_pending()}
    assert {pend[r].next_at for r in first.replayed} == {2e9}
    assert dlq.requested_pool(first.replayed[0]) == "shared-c"
    # they fail again: the same replay request still does nothing
    for rid in first.replayed:
        spool.start_attempts([rid], pool="shared-c", source_ip="127.0.0.8")
        spool.finish(rid, "dead_lettered", event="dead_lettered", reason="again")
    second = dlq.replay(f, pool="shared-c", not_before=2e9)
    assert second.replayed == () and set(second.already) == set(first.replayed)
    assert all(spool.state(r)[0] == "dead_lettered" for r in first.replayed)
    evs = [e.event for e in spool.events_after(0, limit=10_000)]
    assert evs.count("replayed") == 2
    # globex's dead letter was never touched
    assert dlq.list(Filter(tenant="globex"))[0].state == "dead_lettered"


def test_cli_list_show_replay(spool: Spool, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    runner = CliRunner()
    home = str(tmp_path)
    out = runner.invoke(cli_app, ["dlq", "list", "--home", home, "--tenant", "acme"])
    assert out.exit_code == 0, out.output
    assert "3 dead letter(s)" in out.output and "ann@" not in out.output
    js = runner.invoke(cli_app, ["dlq", "list", "--home", home, "--json", "--provider",
                                 "yahoo"])
    assert [json.loads(x)["state"] for x in js.output.splitlines()] == ["expired"]
    rid = json.loads(js.output.splitlines()[0])["id"]
    shown = runner.invoke(cli_app, ["dlq", "show", str(rid), "--home", home])
    assert json.loads(shown.output)["attempt_history"][-1]["n"] == 2
    rep = runner.invoke(cli_app, ["dlq", "replay", "--home", home, "--tenant", "acme",
                                  "--reason", "ttl"])
    assert rep.exit_code == 0 and rep.output.startswith("replayed 1, already replayed 0")
    rep2 = runner.invoke(cli_app, ["dlq", "replay", "--home", home, "--tenant", "acme",
                                   "--reason", "ttl"])
    assert rep2.output.startswith("replayed 0")
    for args, want in ((["dlq", "replay", "--home", home, "--not-before", "soon"],
                        "inboxlab: error: --not-before"),
                       (["dlq", "show", "99999", "--home", home], "no dead letter with id"),
                       (["dlq", "list", "--home", home, "--state", "delivered"],
                        "state must be one of")):
        with pytest.raises(SystemExit) as exc:
            main(args)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and want in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1


def test_http_replay_tenant_scoped(spool: Spool) -> None:
    config = load_config(LAB)
    app = create_app(config, spool, secret=b"s" * 32)
    acme = {"Authorization": "Bearer acme-demo-key-1"}
    globex = {"Authorization": "Bearer globex-demo-key-1"}

    async def go() -> dict[str, Any]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t") as h:
            body = {"filter": {"provider": "gmail"}, "not_before": 1e9}
            return {
                "list": (await h.get("/v1/dlq", headers=globex)).json(),
                "noauth": (await h.post("/v1/replay", json=body)).status_code,
                "badpool": (await h.post("/v1/replay", json={"pool": "nope"},
                                         headers=acme)).status_code,
                "badstate": (await h.post("/v1/replay", json={"filter": {"state": "x"}},
                                          headers=acme)).status_code,
                "r1": (await h.post("/v1/replay", json=body, headers=acme)).json(),
                "r2": (await h.post("/v1/replay", json=body, headers=acme)).json(),
            }

    out = asyncio.run(go())
    assert [d["tenant"] for d in out["list"]["dead_letters"]] == ["globex"]
    assert out["list"]["dead_letters"][0]["recipient"] == "d**@gmail.com"
    assert (out["noauth"], out["badpool"], out["badstate"]) == (401, 422, 422)
    assert out["r1"]["replayed"] == 2 and out["r2"]["replayed"] == 0
    assert out["r2"]["already_replayed"] == 0  # they are queued now: nothing matches
    dlq = DeadLetters(spool)
    assert dlq.list(Filter(tenant="globex"))[0].state == "dead_lettered"  # not acme's
