"""Intervention configs in pyvene's shape, written out as vene's JSON config."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any, Optional, Sequence, Union

import torch

from .interventions import VanillaIntervention, declaration

_FIELDS_PASSED_ON = (
    "layer",
    "component",
    "unit",
    "max_number_of_units",
    "low_rank_dimension",
    "subspace_partition",
    "group_key",
    "intervention_link_key",
)


@dataclass
class RepresentationConfig:
    """Where and how to intervene, with pyvene's field names and order."""

    layer: int = 0
    component: str = "block_output"
    unit: str = "pos"
    max_number_of_units: int = 1
    low_rank_dimension: Optional[int] = None
    intervention_type: Any = None
    intervention: Any = None
    subspace_partition: Optional[list] = None
    group_key: Optional[int] = None
    intervention_link_key: Optional[int] = None
    source_representation: Any = None

    def to_json(self, default_type: Any = None) -> dict:
        kind = self.intervention if self.intervention is not None else self.intervention_type
        if kind is None:
            kind = default_type if default_type is not None else VanillaIntervention
        entry = {name: getattr(self, name) for name in _FIELDS_PASSED_ON if getattr(self, name) is not None}
        entry["intervention"] = declaration(kind)
        if self.source_representation is not None:
            source = self.source_representation
            if isinstance(source, torch.Tensor):
                source = source.detach().to(torch.float32).cpu().reshape(-1).tolist()
            entry["source_representation"] = list(source)
        return entry


_KNOWN = {f.name for f in fields(RepresentationConfig)}


def _representation(value: Any, index: int) -> RepresentationConfig:
    if isinstance(value, RepresentationConfig):
        return value
    if isinstance(value, dict):
        unknown = sorted(set(value) - _KNOWN)
        if unknown:
            raise TypeError(
                f"representations[{index}] has unknown field(s) {', '.join(unknown)}; valid: {', '.join(sorted(_KNOWN))}"
            )
        return RepresentationConfig(**value)
    if isinstance(value, (list, tuple)):
        return RepresentationConfig(*value)
    raise TypeError(f"representations[{index}] must be a RepresentationConfig, a dict or a tuple; got {value!r}")


class IntervenableConfig:
    """A list of representations and a mode ("parallel" or "serial"), as in pyvene.

    ``representations`` is one representation or a list: RepresentationConfig, dicts with its fields, or tuples in
    its field order. ``intervention_types`` (a type, or one per representation) fills in representations that name
    none; the default is VanillaIntervention.
    """

    def __init__(
        self,
        representations: Union[Any, Sequence[Any]] = (),
        intervention_types: Any = None,
        mode: str = "parallel",
    ) -> None:
        if isinstance(representations, (RepresentationConfig, dict)):
            representations = [representations]
        self.representations = [_representation(r, i) for i, r in enumerate(representations)]
        if mode not in ("parallel", "serial"):
            raise ValueError(f"mode must be 'parallel' or 'serial', got {mode!r}")
        self.mode = mode
        self.intervention_types = intervention_types

    def _default_type(self, index: int) -> Any:
        types = self.intervention_types
        if isinstance(types, (list, tuple)):
            if len(types) != len(self.representations):
                raise ValueError(
                    f"intervention_types has {len(types)} entries for {len(self.representations)} representations"
                )
            return types[index]
        return types

    def to_json(self) -> dict:
        """The vene config: ``{"mode": ..., "representations": [...]}``."""
        return {
            "mode": self.mode,
            "representations": [r.to_json(self._default_type(i)) for i, r in enumerate(self.representations)],
        }

    def __repr__(self) -> str:
        return f"IntervenableConfig({json.dumps(self.to_json())})"


def config_json(config: Any) -> str:
    """vene's JSON text for an IntervenableConfig, a config dict (vene's or pyvene's fields), or representations."""
    if isinstance(config, dict) and "representations" in config:
        config = IntervenableConfig(**config)
    elif not isinstance(config, IntervenableConfig):
        config = IntervenableConfig(config)
    return json.dumps(config.to_json())
