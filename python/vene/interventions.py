"""Intervention types by class, as pyvene names them. A class stands for its type with default options; an instance
carries options (``vene.NoiseIntervention(level=0.2)``). Plugin types without a class here are named by their tag:
``{"type": "clamp", "limit": 0.5}`` or ``vene.Intervention.of("clamp", limit=0.5)``."""

from __future__ import annotations

from typing import Any

import torch


def _plain(value: Any) -> Any:
    """Options as JSON values: tensors become (nested) lists of numbers."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class Intervention:
    """An intervention declaration: a vene type tag plus its options."""

    type: str = ""

    def __init__(self, **options: Any) -> None:
        self.options = options

    @staticmethod
    def of(type_name: str, **options: Any) -> "Intervention":
        """A declaration of any type by its tag (built-in or from a plugin)."""
        declaration = Intervention(**options)
        declaration.type = type_name
        return declaration

    def to_json(self) -> dict:
        return {"type": self.type, **_plain(self.options)}

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({options})" if self.type == type(self).type else f"Intervention.of({self.type!r})"


def declaration(value: Any) -> dict:
    """A vene intervention declaration from a class, an instance, a type tag or a dict."""
    if isinstance(value, type) and issubclass(value, Intervention):
        if not value.type:
            raise TypeError("vene.Intervention itself names no type: use a subclass or Intervention.of(tag)")
        return {"type": value.type}
    if isinstance(value, Intervention):
        return value.to_json()
    if isinstance(value, str):
        return {"type": value}
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return _plain(value)
    raise TypeError(
        f"an intervention type is a vene intervention class or instance, a type tag such as 'vanilla', or a dict "
        f"with a 'type'; got {value!r}"
    )


def _kind(name: str, tag: str, doc: str) -> type:
    return type(name, (Intervention,), {"type": tag, "__doc__": doc})


VanillaIntervention = _kind("VanillaIntervention", "vanilla", "base[S] <- source[S] (interchange).")
AdditionIntervention = _kind("AdditionIntervention", "addition", "base[S] += source[S].")
SubtractionIntervention = _kind("SubtractionIntervention", "subtraction", "base[S] -= source[S].")
ZeroIntervention = _kind("ZeroIntervention", "zero", "base[S] <- 0.")
CollectIntervention = _kind("CollectIntervention", "collect", "Returns base[S]; the run is unchanged.")
SkipIntervention = _kind("SkipIntervention", "skip", "The site's input replaces its output.")
NoiseIntervention = _kind("NoiseIntervention", "noise", "base[S] += level * N(0, 1), seeded (level=, seed=).")
ScaleIntervention = _kind("ScaleIntervention", "scale", "base[S] *= factor (factor=).")
RotatedSpaceIntervention = _kind("RotatedSpaceIntervention", "rotated_space", "DAS: swap in a learned rotation.")
LowRankRotatedSpaceIntervention = _kind(
    "LowRankRotatedSpaceIntervention", "low_rank_rotated_space", "DAS on a learned low-rank orthonormal subspace."
)
BoundlessRotatedSpaceIntervention = _kind(
    "BoundlessRotatedSpaceIntervention", "boundless_rotated_space", "Boundless DAS: a learned boundary."
)
SigmoidMaskRotatedSpaceIntervention = _kind(
    "SigmoidMaskRotatedSpaceIntervention", "sigmoid_mask_rotated_space", "A learned sigmoid mask in rotated space."
)
SigmoidMaskIntervention = _kind("SigmoidMaskIntervention", "sigmoid_mask", "A learned sigmoid mask.")
AutoencoderIntervention = _kind("AutoencoderIntervention", "autoencoder", "Swap latents of an autoencoder.")
JumpReLUAutoencoderIntervention = _kind(
    "JumpReLUAutoencoderIntervention", "jumprelu_sae", "Swap latents of a JumpReLU SAE (weights=FILE)."
)
SteeringIntervention = _kind(
    "SteeringIntervention", "steering", "base[S] += coefficient * vector (vector= a tensor or list)."
)


class PCARotatedSpaceIntervention(Intervention):
    """pyvene's PCA rotated space: standardise with the PCA's mean and std, project on its principal components,
    swap the selected components, project back (components=, mean=, std= as tensors, or file=)."""

    type = "pca_rotated_space"

    @classmethod
    def fit(cls, activations: torch.Tensor, n_components: int, **options: Any) -> "PCARotatedSpaceIntervention":
        """The PCA of ``activations`` (any shape ending in the site's width), standardised as pyvene's PCA
        tutorial does (mean and population standard deviation per dimension)."""
        x = activations.detach().reshape(-1, activations.shape[-1]).to(torch.float64).cpu()
        if not 1 <= n_components <= x.shape[1]:
            raise ValueError(f"n_components must be in 1..={x.shape[1]}, got {n_components}")
        mean = x.mean(0)
        std = x.var(0, unbiased=False).sqrt()
        standardised = (x - mean) / std
        _, _, components = torch.linalg.svd(standardised - standardised.mean(0), full_matrices=False)
        return cls(components=components[:n_components].float(), mean=mean.float(), std=std.float(), **options)


class LeaceIntervention(Intervention):
    """LEACE concept erasure (Belrose et al. 2023): out = b - (b - mean) eraser^T (eraser=, mean= as tensors)."""

    type = "leace"

    @classmethod
    def fit(cls, activations: torch.Tensor, labels: torch.Tensor) -> "LeaceIntervention":
        """The closed-form eraser for ``activations`` (examples x width, or any shape ending in the width, one
        label per vector) and integer class ``labels``: afterwards every class has the same mean."""
        from . import _native

        width = activations.shape[-1]
        eraser, mean = _native.fit_leace(activations.detach().reshape(-1, width), labels.reshape(-1).long())
        return cls(eraser=eraser, mean=mean)


class NullspaceProjectionIntervention(Intervention):
    """INLP's projection (Ravfogel et al. 2020): removes the span of linear probes' directions (directions= r x n)."""

    type = "nullspace_projection"

    @classmethod
    def fit(cls, activations: torch.Tensor, labels: torch.Tensor, iterations: int = 10) -> "NullspaceProjectionIntervention":
        """Iterated nullspace projection on ``activations`` (examples x width, or any shape ending in the width)
        and integer class ``labels``: ``iterations`` logistic probes, each trained with the earlier ones'
        directions removed. The held-out accuracy of each probe is in ``.accuracies``."""
        from . import _native

        width = activations.shape[-1]
        directions, accuracies = _native.fit_inlp(
            activations.detach().reshape(-1, width), labels.reshape(-1).long(), iterations
        )
        fitted = cls(directions=directions)
        fitted.accuracies = accuracies
        return fitted
