"""vene: interventions on neural model internals, with pyvene's semantics and numbers, run natively.

    import torch, vene
    model = vene.load("google/gemma-3-270m")            # a Hugging Face directory, a GGUF file or a hub id
    config = vene.IntervenableConfig([{"layer": 4, "component": "block_output"}])
    intervenable = vene.IntervenableModel(config, model)
    _, counterfactual = intervenable(base, [source], unit_locations={"sources->base": 3})
    counterfactual.logits                               # a torch.Tensor

Tensors pass between torch and vene without copying: both use the libtorch that `import torch` loaded.
"""

import torch  # noqa: F401  (first: the extension resolves libtorch to the copy torch loaded)

from . import _native
from ._native import VeneError
from .causal import CausalModel
from .config import IntervenableConfig, RepresentationConfig
from .interventions import (
    AdditionIntervention,
    AutoencoderIntervention,
    BoundlessRotatedSpaceIntervention,
    CollectIntervention,
    Intervention,
    JumpReLUAutoencoderIntervention,
    LeaceIntervention,
    LowRankRotatedSpaceIntervention,
    NoiseIntervention,
    NullspaceProjectionIntervention,
    PCARotatedSpaceIntervention,
    RotatedSpaceIntervention,
    ScaleIntervention,
    SigmoidMaskIntervention,
    SigmoidMaskRotatedSpaceIntervention,
    SkipIntervention,
    SteeringIntervention,
    SubtractionIntervention,
    VanillaIntervention,
    ZeroIntervention,
)
from .intervenable import IntervenableModel, IntervenableModelOutput
from .model import Model, ModelOutput, load, plugins
from . import studies
from .studies import attribute, circuit

__version__ = _native.__version__

__all__ = [
    "AdditionIntervention",
    "attribute",
    "AutoencoderIntervention",
    "BoundlessRotatedSpaceIntervention",
    "CausalModel",
    "circuit",
    "CollectIntervention",
    "IntervenableConfig",
    "IntervenableModel",
    "IntervenableModelOutput",
    "Intervention",
    "JumpReLUAutoencoderIntervention",
    "LeaceIntervention",
    "LowRankRotatedSpaceIntervention",
    "Model",
    "ModelOutput",
    "NoiseIntervention",
    "NullspaceProjectionIntervention",
    "PCARotatedSpaceIntervention",
    "RepresentationConfig",
    "RotatedSpaceIntervention",
    "ScaleIntervention",
    "SigmoidMaskIntervention",
    "SigmoidMaskRotatedSpaceIntervention",
    "SkipIntervention",
    "SteeringIntervention",
    "SubtractionIntervention",
    "VanillaIntervention",
    "VeneError",
    "ZeroIntervention",
    "load",
    "plugins",
    "studies",
]
