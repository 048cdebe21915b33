"""Provider behaviour models: one pure, stateful object per mailbox provider.

The same ``ProviderModel`` objects run in the SimPy world (virtual time) and behind the
sandbox's real SMTP servers (``sim.sandbox``). Parameters come from
``fixtures/models/<provider>.toml`` laid over ``generic.toml``.
"""

from sim.providers.facts import Consequence, MessageFacts, Outcome, Reply, Session
from sim.providers.model import ProviderModel, netblock_of
from sim.providers.params import MODELS_DIR, ModelParams, load_params

__all__ = [
    "MODELS_DIR",
    "Consequence",
    "MessageFacts",
    "ModelParams",
    "Outcome",
    "ProviderModel",
    "Reply",
    "Session",
    "load_params",
    "netblock_of",
]
