"""Shaping layering: fold partial layers, lowest first, into one ``Shaping``.

Owns the rule "the highest layer that sets a field wins" and the record of which layer
set each field (``config show``). Knows nothing of files: the lab config builds the
layer list (see ``engine.config`` for the order) and calls ``layer_shaping``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.policy.types import Shaping

SHAPING_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Shaping))


@dataclass(frozen=True, slots=True)
class Layer:
    """One named layer: the fields it sets (a field absent here is left to lower layers)."""

    name: str
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ResolvedShaping:
    """The folded ``Shaping``, the layers in order and, per field, the layer that set it."""

    shaping: Shaping
    layers: tuple[Layer, ...]
    source: Mapping[str, str]

    def as_dict(self) -> dict[str, Any]:
        """JSON form for ``config show --json``."""
        return {
            "layers": [{"name": layer.name, "fields": dict(layer.fields)} for layer in self.layers],
            "resolved": {k: getattr(self.shaping, k) for k in SHAPING_FIELD_NAMES},
            "source": dict(self.source),
        }


def builtin_layer() -> Layer:
    """The dataclass defaults of ``Shaping``: the bottom layer, setting every field."""
    base = Shaping()
    return Layer("builtin", {k: getattr(base, k) for k in SHAPING_FIELD_NAMES})


def layer_shaping(layers: Sequence[Layer]) -> ResolvedShaping:
    """Fold ``layers`` (lowest first): each field takes the value of the last layer setting it.

    Fields no layer sets keep the ``Shaping`` default and are attributed to ``builtin``.
    Raises ``ValueError`` for a field name ``Shaping`` does not have.
    """
    values: dict[str, Any] = {}
    source: dict[str, str] = {k: "builtin" for k in SHAPING_FIELD_NAMES}
    for layer in layers:
        for key, value in layer.fields.items():
            if key not in source:
                raise ValueError(f"layer {layer.name}: Shaping has no field {key!r}")
            values[key] = value
            source[key] = layer.name
    return ResolvedShaping(Shaping(**values), tuple(layers), source)
