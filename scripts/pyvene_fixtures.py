"""What every reference-fixture script shares: build a pyvene model for a vene config, run pyvene, write a case.

Imported by scripts/gen_fixtures_*.py (run them with the environment of scripts/pyref-env.sh). Importing it
puts torch in deterministic single-threaded mode and transformers offline, so fixtures come out the same each time.

A case directory holds
  config.json            the vene intervention config
  inputs.json            base / sources / unit_locations / subspaces
  expected.safetensors   output (the model's logits, f32) and collected.i (the i-th collect intervention's
                         activations, in config order, as pyvene returns them)
"""
import importlib.metadata
import json
import logging
import os
import re
import shutil
import sys
import warnings

import torch

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from safetensors.torch import save_file  # noqa: E402

from pyvene import (  # noqa: E402
    AdditionIntervention,
    CollectIntervention,
    IntervenableConfig,
    IntervenableModel,
    RepresentationConfig,
    SubtractionIntervention,
    VanillaIntervention,
    ZeroIntervention,
)

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
VERSIONS = (("pyvene", "0.1.8"), ("transformers", "4.57.1"), ("torch", "2.13.0"))

INTERVENTION_TYPES = {
    "vanilla": VanillaIntervention,
    "addition": AdditionIntervention,
    "subtraction": SubtractionIntervention,
    "zero": ZeroIntervention,
    "collect": CollectIntervention,
}


def check_versions():
    """Prints the versions in use and warns about any other than the fixtures were made with."""
    found = {name: importlib.metadata.version(name) for name, _ in VERSIONS}
    print(", ".join(f"{k} {v}" for k, v in found.items()))
    for name, want in VERSIONS:
        if not found[name].startswith(want):
            print(f"warning: fixtures were made with {name} {want}, found {found[name]}", file=sys.stderr)


# --------------------------------------------------------------------------- configs
def rep(layer, component, itype, unit="pos", n=1, **extra):
    """One representation of a vene config."""
    r = {"layer": layer, "component": component, "unit": unit, "max_number_of_units": n,
         "intervention": {"type": itype}}
    r.update(extra)
    return r


def representation_for(rep):
    """vene config entry -> pyvene RepresentationConfig."""
    kwargs = dict(
        layer=rep["layer"],
        component=rep["component"],
        unit=rep["unit"],
        max_number_of_units=rep["max_number_of_units"],
        intervention_type=INTERVENTION_TYPES[rep["intervention"]["type"]],
    )
    for key in ("subspace_partition", "group_key"):
        if key in rep:
            kwargs[key] = rep[key]
    if "source_representation" in rep:
        kwargs["source_representation"] = torch.tensor(rep["source_representation"], dtype=torch.float32)
    return RepresentationConfig(**kwargs)


def intervenable_for(model, vcfg):
    """A pyvene model for a vene config; make a fresh one per case (pyvene's use_fast flag is sticky)."""
    reps = [representation_for(r) for r in vcfg["representations"]]
    return IntervenableModel(IntervenableConfig(representations=reps, mode=vcfg["mode"]), model)


# --------------------------------------------------------------------------- running
def to_tensors(d):
    """inputs.json dict -> model kwargs: ids and masks stay integer, embeddings and pixels become f32."""
    out = {}
    for k, v in d.items():
        integer = k.endswith("_ids") or k == "attention_mask"
        out[k] = torch.tensor(v, dtype=torch.long if integer else torch.float32)
    return out


def json_roundtrip(x):
    """What inputs.json holds (tuples become lists)."""
    return json.loads(json.dumps(x))


def logits_of(out):
    """Hugging Face outputs carry .logits; pyvene's own MLP and GRU return tuples."""
    return out.logits if hasattr(out, "logits") else out[0]


def run_pyvene(ivm, inputs):
    """Runs pyvene on inputs.json's contents; returns (logits, collected activations)."""
    base = to_tensors(inputs["base"])
    kwargs = {}
    if "sources" in inputs:
        kwargs["sources"] = [to_tensors(s) for s in inputs["sources"]]
    if "unit_locations" in inputs:
        kwargs["unit_locations"] = json_roundtrip(inputs["unit_locations"])
    if "subspaces" in inputs:
        kwargs["subspaces"] = json_roundtrip(inputs["subspaces"])
    with torch.no_grad():
        out = ivm(base, **kwargs)
    collected = []
    if len(ivm.interventions) == 0 and "sources" not in kwargs and "unit_locations" not in kwargs:
        cf, none = out  # pyvene short-circuits to `return self.model(**base), None`
        assert none is None
    elif ivm.return_collect_activations:
        (_, collected), cf = out
    else:
        _, cf = out
    return logits_of(cf), list(collected)


def plain_logits(model, inputs):
    with torch.no_grad():
        return logits_of(model(**to_tensors(inputs["base"])))


# --------------------------------------------------------------------------- writing
def write_json(path, obj, compact_rows=False):
    """Indented JSON; with compact_rows, innermost number lists stay on one line (image rows)."""
    text = json.dumps(obj, indent=1)
    if compact_rows:
        text = re.sub(r"\[[-0-9.eE,\s]+\]", lambda m: re.sub(r"\s+", "", m.group(0)), text)
        assert json.loads(text) == obj
    with open(path, "w") as f:
        f.write(text)
        f.write("\n")


def write_expected(case_dir, logits, collected):
    tensors = {"output": logits.detach().to(torch.float32).contiguous().clone()}
    for i, c in enumerate(collected):
        tensors[f"collected.{i}"] = c.detach().to(torch.float32).contiguous().clone()
    save_file(tensors, os.path.join(case_dir, "expected.safetensors"))
    return tensors


def write_case(cases_dir, name, vcfg, inputs, logits, collected, compact_rows=False):
    case_dir = os.path.join(cases_dir, name)
    os.makedirs(case_dir)
    write_json(os.path.join(case_dir, "config.json"), vcfg, compact_rows)
    write_json(os.path.join(case_dir, "inputs.json"), inputs, compact_rows)
    write_expected(case_dir, logits, collected)


def reset_dir(*dirs):
    """Removes generated directories (a README.md beside them is kept)."""
    for d in dirs:
        if os.path.exists(d):
            shutil.rmtree(d)
