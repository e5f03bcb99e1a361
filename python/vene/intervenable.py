"""``vene.IntervenableModel``: pyvene's call shape over vene's engine."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import torch

from . import _native
from .config import config_json
from .model import Model, ModelOutput, model_inputs


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not a unit location (use ints, lists, tuples or tensors)")


def _locations_json(value: Any) -> Optional[str]:
    return None if value is None else json.dumps(value, default=_json_default)


def _examples_text(examples: Union[str, os.PathLike, Sequence[dict]]) -> str:
    """JSON-lines text from a file path or a list of example dicts (tensors become lists)."""
    if isinstance(examples, (str, os.PathLike)):
        with open(examples, encoding="utf-8") as file:
            return file.read()
    return "\n".join(json.dumps(example, default=_json_default) for example in examples)


@dataclass
class IntervenableModelOutput:
    """pyvene's ``return_dict=True`` output."""

    original_outputs: Optional[ModelOutput]
    intervened_outputs: ModelOutput
    collected_activations: Optional[list]


class IntervenableModel:
    """A model with interventions bound to its hook sites (pyvene's ``IntervenableModel``).

    ``config`` is an IntervenableConfig, a config dict or representations; ``model`` a :class:`vene.Model`.
    """

    def __init__(self, config: Any, model: Model, seed: int = 0) -> None:
        if not isinstance(model, Model):
            raise TypeError(f"model must be a vene.Model (from vene.load), got {type(model).__name__}")
        self.model = model
        self._native = _native.Intervenable(model._native, config_json(config), seed)
        self._collects = self._count_collects()

    @classmethod
    def _wrap(cls, native: "_native.Intervenable", model: Model) -> "IntervenableModel":
        self = cls.__new__(cls)
        self.model, self._native = model, native
        self._collects = self._count_collects()
        return self

    def _count_collects(self) -> int:
        config = json.loads(self._native.config_json())
        return sum(r["intervention"].get("type") == "collect" for r in config["representations"])

    @classmethod
    def load(cls, path: Union[str, os.PathLike], model: Model, seed: int = 0) -> "IntervenableModel":
        """Binds a directory saved by vene or by pyvene (``IntervenableModel.save``), a vene config file or a hub
        repo id to ``model``, restoring the saved state."""
        return cls._wrap(_native.Intervenable.load(os.fspath(path), model._native, seed), model)

    def save(self, save_directory: Union[str, os.PathLike]) -> None:
        """Writes the config and the interventions' state (replacing the directory whole)."""
        self._native.save(os.fspath(save_directory))

    @property
    def config(self) -> dict:
        """The bound config as vene JSON (every intervention option included)."""
        return json.loads(self._native.config_json())

    @property
    def sorted_keys(self) -> list:
        """pyvene's keys, one per representation in config order."""
        return self._native.keys()

    def _inputs(self, base: Any, sources: Any) -> tuple:
        device = self.model.device
        base_inputs = model_inputs(base, "base", device)
        if base_inputs is None:
            raise _native.VeneError("invalid inputs: base is None (give the base inputs)")
        if sources is not None and not isinstance(sources, (list, tuple)):
            sources = [sources]
        source_inputs = [model_inputs(s, f"sources[{i}]", device) for i, s in enumerate(sources or [])]
        return base_inputs, source_inputs

    def __call__(
        self,
        base: Any,
        sources: Any = None,
        unit_locations: Any = None,
        subspaces: Any = None,
        output_original_output: bool = False,
        return_dict: bool = False,
        check_finite: bool = False,
    ) -> Any:
        """One intervened run, returning what pyvene returns: ``(base_outputs, counterfactual_outputs)``, or
        ``((base_outputs, collected_activations), counterfactual_outputs)`` when the config collects; base_outputs
        is None unless ``output_original_output``. ``check_finite`` warns naming the first intervention that wrote a
        NaN or an infinite value."""
        base_inputs, source_inputs = self._inputs(base, sources)
        output, collected, non_finite = self._native.run(
            base_inputs, source_inputs, _locations_json(unit_locations), _locations_json(subspaces), check_finite
        )
        if non_finite is not None:
            warnings.warn(f"the output of {non_finite} has NaN or infinite values, and so may everything after it")
        original = None
        if output_original_output:
            original = ModelOutput(self.model._native.forward(*base_inputs))
        intervened = ModelOutput(output)
        if return_dict:
            return IntervenableModelOutput(original, intervened, collected if self._collects else None)
        if self._collects:
            return (original, collected), intervened
        return original, intervened

    forward = __call__

    def generate(
        self,
        base: Any,
        sources: Any = None,
        unit_locations: Any = None,
        subspaces: Any = None,
        max_new_tokens: int = 20,
        temperature: float = 0.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        seed: int = 0,
        eos_token_id: Optional[int] = None,
        intervene_on: str = "both",
        output_original_output: bool = False,
    ) -> tuple:
        """Decodes each base example with the interventions acting on the prompt, the new tokens, or both
        (``intervene_on``); greedy unless ``temperature`` > 0. Returns ``(base_outputs, counterfactual_outputs)``
        as pyvene does: token-id tensors of prompt plus continuation, one row per example (rows of different
        lengths are right-padded with -1); base_outputs is None unless ``output_original_output``."""
        base_inputs, source_inputs = self._inputs(base, sources)
        ids, mask, _ = base_inputs
        if ids is None:
            raise _native.VeneError("invalid inputs: generation needs base input_ids")
        # Right padding: each prompt is its row up to its mask's length.
        lengths = mask.sum(-1).tolist() if mask is not None else [ids.shape[1]] * ids.shape[0]
        prompts = [row[:length] for row, length in zip(ids, lengths)]
        options = dict(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            stop_token=eos_token_id,
            intervene_on=intervene_on,
        )
        locations, spaces = _locations_json(unit_locations), _locations_json(subspaces)
        rows = []
        for prompt in prompts:
            prompt = prompt.tolist()
            rows.append(prompt + self._native.generate(prompt, source_inputs, locations, spaces, **options))
        original = None
        if output_original_output:
            plain = IntervenableModel({"representations": []}, self.model)
            original = plain.generate(base, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                                      top_p=top_p, seed=seed, eos_token_id=eos_token_id)[1]
        return original, _padded(rows, self.model.device)

    def parameters(self) -> list:
        """The interventions' trainable tensors, shared (an optimizer on them trains the interventions)."""
        return [tensor for _, tensor in self._native.parameters()]

    def named_parameters(self) -> list:
        return self._native.parameters()

    def get_trainable_parameters(self) -> list:
        return self.parameters()

    def state_dict(self) -> dict:
        """Everything needed to restore the interventions, as ``{key/name: tensor}``."""
        return dict(self._native.state())

    def load_state_dict(self, state: dict) -> None:
        self._native.load_state(list(state.items()))

    def auxiliary_loss(self) -> Optional[torch.Tensor]:
        """The interventions' auxiliary training losses summed (e.g. boundless DAS's boundary penalty), or None."""
        return self._native.auxiliary_loss()

    def train(self, examples: Any = True, progress: Optional[Callable] = None, **options: Any) -> Any:
        """``train()`` / ``train(False)`` set training mode, as on a torch module. ``train(examples, ...)`` runs
        vene's trainer (Adam, warm-up then linear decay, cross entropy at the last position, the model frozen) on
        counterfactual examples (``vene train``'s JSON-lines file, or a list of dicts with ``base``, ``sources``,
        ``unit_locations``, ``subspaces``, ``label``, ``base_label``); options: epochs, batch_size, learning_rate,
        warmup_fraction, eval_fraction, seed, checkpoint, checkpoint_every. With ``train_model=True`` the model's
        own weights are trained too (interchange intervention training: ``interchange_weight`` × the
        counterfactual loss + ``task_weight`` × the loss on ``base_label``); save them with ``save_model``.
        Returns the report (losses, IIA, task accuracy)."""
        if isinstance(examples, bool):
            self._native.set_training(examples)
            return self
        checkpoint = options.pop("checkpoint", None)
        if checkpoint is not None:
            options["checkpoint"] = os.fspath(checkpoint)
        return self._native.train(_examples_text(examples), progress=progress, **options)

    def eval(self) -> "IntervenableModel":
        self._native.set_training(False)
        return self

    def save_model(self, directory: Any) -> None:
        """Writes the model's weights (after ``train(..., train_model=True)``) as a checkpoint ``vene.load`` and
        pyvene load: model.safetensors beside copies of the model's config and tokenizer files."""
        self._native.save_model(os.fspath(os.path.expanduser(directory)))

    def evaluate(self, examples: Any, batch_size: int = 16) -> dict:
        """Loss, interchange intervention accuracy and, when the examples give ``base_label``, the plain model's
        task accuracy, without gradients."""
        loss, iia, task_accuracy = self._native.evaluate(_examples_text(examples), batch_size)
        return {"loss": loss, "iia": iia, "task_accuracy": task_accuracy}

    def __repr__(self) -> str:
        return f"vene.IntervenableModel({len(self.sorted_keys)} interventions on {self.model!r})"


def _padded(rows: list, device: torch.device) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [-1] * (width - len(r)) for r in rows], dtype=torch.int64, device=device)
