"""Injected faults: provider brownouts, DNSBL listing and delisting, DKIM key breakage and
DNS outages, each a few SimPy processes (one per incident, never per message).

Owns ``IncidentState`` (which faults are active, read by the world when it delivers) and
``start_incidents``. Brownouts are handed to the provider model itself (its own brownout
schedule), listings to the model's blocklist, so replies always come from the models.
Must not touch the policy core: the scheduler learns of faults only through replies and
the feedback the world forwards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from typing import Any

import simpy

from sim.providers import ProviderModel, netblock_of
from sim.providers.params import Brownout
from sim.scenario import Incident

Emit = Callable[[float, Incident, str], None]


@dataclasses.dataclass(slots=True)
class IncidentState:
    """Faults the delivery path must honour right now."""

    dkim_broken: set[str] = dataclasses.field(default_factory=set)  # sending domains
    dns_down: set[str] = dataclasses.field(default_factory=set)  # providers


def install_brownouts(models: dict[str, ProviderModel], incidents: tuple[Incident, ...]) -> None:
    """Add each brownout incident to its provider model's own brownout schedule."""
    for inc in incidents:
        if inc.kind == "brownout" and inc.provider in models:
            m = models[inc.provider]
            m.params = dataclasses.replace(
                m.params, brownouts=(*m.params.brownouts, Brownout(inc.start_s, inc.duration_s)))


def start_incidents(env: simpy.Environment, incidents: tuple[Incident, ...], start: float,
                    models: dict[str, ProviderModel], pool_ips: dict[str, tuple[str, ...]],
                    state: IncidentState, emit: Emit) -> None:
    """One SimPy process per incident toggling ``state`` / model blocklists on and off."""
    for inc in incidents:
        env.process(_run(env, inc, start, models, pool_ips, state, emit))


def _run(env: simpy.Environment, inc: Incident, start: float,
         models: dict[str, ProviderModel], pool_ips: dict[str, tuple[str, ...]],
         state: IncidentState, emit: Emit) -> Generator[Any, Any, None]:
    yield env.timeout(inc.start_s)
    emit(start + env.now, inc, "start")
    until = start + inc.start_s + inc.duration_s
    targets = [models[inc.provider]] if inc.provider in models else list(models.values())
    if inc.kind == "dnsbl":
        for m in targets:
            for ip in pool_ips.get(inc.pool or "", ()):
                m.list_netblock(netblock_of(ip), until)
    elif inc.kind == "dkim_break" and inc.sending_domain:
        state.dkim_broken.add(inc.sending_domain)
    elif inc.kind == "dns_outage" and inc.provider:
        state.dns_down.add(inc.provider)
    yield env.timeout(inc.duration_s)
    if inc.kind == "dkim_break" and inc.sending_domain:
        state.dkim_broken.discard(inc.sending_domain)
    elif inc.kind == "dns_outage" and inc.provider:
        state.dns_down.discard(inc.provider)
    emit(start + env.now, inc, "end")
