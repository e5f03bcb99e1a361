"""Loading models through vene's adapter plugins, and their plain forward passes and tokenizers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import torch

from . import _native

_DTYPES = {
    torch.float32: "f32",
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.float64: "f64",
}


def search_dirs(extra: Optional[Iterable[Union[str, os.PathLike]]] = None) -> list:
    """Where plugins are looked for: the package's own, then VENE_PLUGIN_PATH, then ``extra``."""
    dirs = [str(Path(__file__).parent / "plugins")]
    dirs += [d for d in os.environ.get("VENE_PLUGIN_PATH", "").split(os.pathsep) if d]
    dirs += [str(d) for d in extra or ()]
    return dirs


def plugins(plugin_dirs: Optional[Sequence[Union[str, os.PathLike]]] = None) -> dict:
    """The loaded plugins (path, versions, model and intervention types), the built-in intervention types, and
    any library that could not be used with the reason."""
    loaded, problems = _native.plugins(search_dirs(plugin_dirs))
    return {"plugins": loaded, "builtin_types": dict(_native.builtin_types()), "problems": problems}


@dataclass
class ModelOutput:
    """A forward pass's output; ``.logits`` as in transformers (``output[0]`` works too)."""

    logits: torch.Tensor

    def __getitem__(self, key: Union[int, str]) -> torch.Tensor:
        if key in (0, "logits"):
            return self.logits
        raise KeyError(key)


def model_inputs(value: Any, what: str, device: torch.device) -> Optional[tuple]:
    """``(input_ids, attention_mask, features)`` from a tensor (ids if integer, features if float) or a mapping
    with ``input_ids`` / ``attention_mask`` / ``inputs_embeds`` (a transformers BatchEncoding works). Tensors
    already of the right dtype and device pass as they are, without a copy."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = {"inputs_embeds" if value.is_floating_point() else "input_ids": value}
    if not hasattr(value, "keys"):
        raise TypeError(f"{what} must be a tensor or a mapping such as {{'input_ids': tensor}}; got {type(value).__name__}")
    known = {"input_ids", "attention_mask", "inputs_embeds", "inputs", "features"}
    unknown = sorted(set(value.keys()) - known)
    if unknown:
        raise _native.VeneError(
            f"invalid inputs: {what} has {', '.join(repr(k) for k in unknown)}; valid keys: input_ids, attention_mask, "
            f"inputs_embeds (or inputs)"
        )

    def tensor(key: str, dtype: Optional[torch.dtype]) -> Optional[torch.Tensor]:
        found = value.get(key)
        if found is None:
            return None
        if not isinstance(found, torch.Tensor):
            found = torch.tensor(found)
        if dtype is not None and found.dtype != dtype:
            found = found.to(dtype)
        return found.to(device) if found.device != device else found

    features = next((tensor(k, None) for k in ("inputs_embeds", "inputs", "features") if value.get(k) is not None), None)
    return (tensor("input_ids", torch.int64), tensor("attention_mask", torch.int64), features)


class Model:
    """A model held by an adapter plugin. Load it with :func:`vene.load`."""

    def __init__(self, native: "_native.Model") -> None:
        self._native = native

    @property
    def path(self) -> str:
        return self._native.path

    @property
    def device(self) -> torch.device:
        return torch.device(self._native.device)

    @property
    def catalog(self) -> dict:
        """Model type, sizes, and every hook-site component with its layout, width, layers and units."""
        return self._native.catalog()

    @property
    def config(self) -> dict:
        return {k: v for k, v in self.catalog.items() if k != "components"}

    def components(self) -> list:
        return [c["name"] for c in self.catalog["components"]]

    def __call__(self, inputs: Any = None, **kwargs: Any) -> ModelOutput:
        """A plain forward pass: ``model(input_ids=ids)``, ``model({"input_ids": ids, ...})`` or ``model(ids)``."""
        ids, mask, features = model_inputs(inputs if inputs is not None else kwargs, "the inputs", self.device)
        return ModelOutput(self._native.forward(ids, mask, features))

    forward = __call__

    def tokenize(self, texts: Union[str, Sequence[str]]) -> dict:
        """Texts tokenized as the model reads prompts, right-padded: ``{"input_ids", "attention_mask"}``."""
        ids, mask = self._native.tokenize([texts] if isinstance(texts, str) else list(texts))
        return {"input_ids": ids, "attention_mask": mask}

    def encode(self, text: str, special_tokens: bool = True) -> list:
        return self._native.encode(text, special_tokens)

    def decode(self, ids: Union[Sequence[int], torch.Tensor]) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        return self._native.decode(list(ids))

    def __repr__(self) -> str:
        c = self.config
        return f"vene.Model({c['model_type']}, {c['num_layers']} layers, hidden {c['hidden_size']}, from {self.path})"


def load(
    path: Union[str, os.PathLike],
    device: Union[str, torch.device] = "cpu",
    dtype: Union[str, torch.dtype] = torch.float32,
    plugin_dirs: Optional[Sequence[Union[str, os.PathLike]]] = None,
) -> Model:
    """Loads a model: a Hugging Face directory (config.json + safetensors, or pytorch_model.bin read as data, zip or
    legacy), a llama.cpp GGUF file, a real model the set-up installs by name (``gemma-3-270m``,
    ``easyocr-english-g2``, ``efficientnet-lite0``, ``silero-vad``), or a hub repo id from the Hugging Face cache, with
    whichever plugin provides its type."""
    dtype_name = _DTYPES.get(dtype, dtype) if isinstance(dtype, torch.dtype) else str(dtype)
    if isinstance(dtype, torch.dtype) and dtype not in _DTYPES:
        raise _native.VeneError(f"unknown dtype {dtype}: use torch.float32, float16, bfloat16 or float64")
    location = os.path.expanduser(os.fspath(path))
    native = _native.Model.load(location, str(device), dtype_name, search_dirs(plugin_dirs))
    return Model(native)
