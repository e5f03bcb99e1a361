"""High-level causal models (pyvene's ``CausalModel``), declared as data, and the datasets they generate.

    spec = vene.CausalModel.from_file("examples/causal/hierarchical_equality.json")
    factual = spec.factual(100_000, seed=0)                 # [{"base": ..., "label": ..., "base_label": ...}, ...]
    counterfactual = spec.counterfactual(["WX", "YZ"], 100_000, seed=1, subspaces=True)
    intervenable.train(counterfactual, train_model=True)    # or DAS on a frozen model

The declaration is the JSON ``vene causal-model`` reads: variables with ``values`` (inputs) or a ``function`` in a
small expression language (no Python code runs), the ``output``, optional ``sampling`` patterns, and the
``encoding`` into model inputs (``vectors`` or a ``text`` template).
"""

import json
import os
from typing import Any, Iterable, List, Optional, Sequence

from . import _native


class CausalModel:
    """A checked causal-model declaration; ``factual`` and ``counterfactual`` sample ``vene train`` examples."""

    def __init__(self, spec: Any):
        self.spec_text = spec if isinstance(spec, str) else json.dumps(spec)
        _native.causal_check(self.spec_text)

    @classmethod
    def from_file(cls, path: Any) -> "CausalModel":
        with open(os.path.expanduser(os.fspath(path)), encoding="utf-8") as file:
            return cls(file.read())

    def factual(self, count: int, seed: int = 0) -> List[dict]:
        """Sampled inputs with the output as ``label`` (and ``base_label``)."""
        return _lines(_native.causal_factual(self.spec_text, count, seed))

    def counterfactual(
        self,
        variables: Sequence[str],
        count: int,
        seed: int = 0,
        interventions: Optional[Iterable[Sequence[str]]] = None,
        subspaces: bool = False,
    ) -> List[dict]:
        """Interchanges on the aligned ``variables`` (source i feeds variable i; the base stands in where a variable
        is not intervened on); each example draws one of ``interventions`` (default: every non-empty subset).
        ``subspaces=True`` adds ``"subspaces": [[[0]], [[1]], ...]``."""
        sets = [list(s) for s in interventions] if interventions is not None else []
        text = _native.causal_counterfactual(self.spec_text, list(variables), sets, count, seed, subspaces)
        return _lines(text)


def _lines(text: str) -> List[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
