#!/usr/bin/env python3
"""Generates the ResNet reference fixtures under tests/fixtures/resnet (no pyvene: torch forward hooks).

Run: scripts/pyref-env.sh && .deps/pyref/bin/python scripts/gen_fixtures_resnet.py

Output (deterministic, no network), same layout as the GPT-2 fixtures:
  tests/fixtures/resnet/model/                 seeded random ResNetForImageClassification (basic blocks)
  tests/fixtures/resnet/cases/<name>/config.json         vene intervention config
  tests/fixtures/resnet/cases/<name>/inputs.json         {"base": {"inputs": (b, 3, H, W)}, "sources": [...],
                                                           "unit_locations": ...}
  tests/fixtures/resnet/cases/<name>/expected.safetensors
      output       intervened logits, f32 (batch, num_labels)
      collected.i  i-th collected activation (config order)

vene's ResNet sites (feature maps are (b, c, h, w)):
  embedder_output  output of resnet.embedder                              (layer 0 only)
  block_input      input of resnet.encoder.stages[s].layers[i]            (blocks numbered globally)
  block_output     output of resnet.encoder.stages[s].layers[i]
  stage_output     output of resnet.encoder.stages[s]                     (layer = s)
  pooler_output    output of resnet.pooler flattened to (b, c)            (layer 0 only)
Units: `channel` selects along dim 1; `pos` selects flattened spatial positions (row * w + col), the
selected units being shaped (b, units, c).
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyvene_fixtures import (  # noqa: E402  (offline mode, deterministic algorithms, 1 thread)
    FIXTURES,
    check_versions,
    rep,
    reset_dir,
    write_case,
)

from transformers import ResNetConfig, ResNetForImageClassification  # noqa: E402

OUT = os.path.join(FIXTURES, "resnet")
MODEL_DIR = os.path.join(OUT, "model")
CASES_DIR = os.path.join(OUT, "cases")

BATCH = 2
CHANNELS = 3
# 16 x 24 rather than 16 x 16: with 16 x 16, stage 1 is 2 x 2 and the spatial position 5 of the
# vanilla_spatial case would not exist; 16 x 24 gives stage 1 a non-square 2 x 3 map (positions 0..5).
HEIGHT = 16
WIDTH = 24



# --------------------------------------------------------------------------- model
def build_model():
    torch.manual_seed(0)
    config = ResNetConfig(
        num_channels=CHANNELS,
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 2],
        layer_type="basic",
        num_labels=5,
        hidden_act="relu",
        downsample_in_first_stage=False,
    )
    model = ResNetForImageClassification(config)
    g = torch.Generator().manual_seed(0)
    done = set()
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.2)
                done.add(f"{name}.weight")
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.05)
                    done.add(f"{name}.bias")
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(1.0 + torch.randn(m.weight.shape, generator=g) * 0.1)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(1.0 + (torch.randn(m.running_var.shape, generator=g) * 0.2).abs())
                done.update(f"{name}.{leaf}" for leaf in ("weight", "bias", "running_mean", "running_var"))
    missing = [n for n, _ in model.named_parameters() if n not in done]
    assert not missing, f"parameters not re-initialised: {missing}"
    model.eval()
    return model


def load_model():
    model = ResNetForImageClassification.from_pretrained(MODEL_DIR, torch_dtype=torch.float32)
    model.eval()
    return model


# --------------------------------------------------------------------------- sites
def blocks(model):
    """Residual blocks in global order (vene's block_input / block_output layer numbers)."""
    return [layer for stage in model.resnet.encoder.stages for layer in stage.layers]


def site(model, component, layer):
    """(module, "input" | "output") that a vene ResNet site reads."""
    if component == "embedder_output":
        assert layer == 0
        return model.resnet.embedder, "output"
    if component == "block_input":
        return blocks(model)[layer], "input"
    if component == "block_output":
        return blocks(model)[layer], "output"
    if component == "stage_output":
        return model.resnet.encoder.stages[layer], "output"
    if component == "pooler_output":
        assert layer == 0
        return model.resnet.pooler, "output"
    raise ValueError(component)


def run(model, x, edits=(), grabs=()):
    """Forward with `edits` [(component, layer, fn(t) -> t)] applied and `grabs` [(component, layer)] read.

    Returns (logits, [grabbed tensors]). pooler_output is seen as (b, c).
    """
    handles, grabbed = [], {}

    def view_in(component, t):
        return t.flatten(1) if component == "pooler_output" else t

    def view_out(component, t, like):
        return t.reshape(like.shape) if component == "pooler_output" else t

    for k, (component, layer) in enumerate(grabs):
        module, kind = site(model, component, layer)
        if kind == "input":
            handles.append(module.register_forward_pre_hook(
                lambda m, args, k=k, c=component: grabbed.__setitem__(k, view_in(c, args[0]).clone())))
        else:
            handles.append(module.register_forward_hook(
                lambda m, args, out, k=k, c=component: grabbed.__setitem__(k, view_in(c, out).clone())))
    for component, layer, fn in edits:
        module, kind = site(model, component, layer)
        if kind == "input":
            handles.append(module.register_forward_pre_hook(
                lambda m, args, fn=fn, c=component:
                    (view_out(c, fn(view_in(c, args[0]).clone()), args[0]),) + tuple(args[1:])))
        else:
            handles.append(module.register_forward_hook(
                lambda m, args, out, fn=fn, c=component: view_out(c, fn(view_in(c, out).clone()), out)))
    try:
        with torch.no_grad():
            logits = model(pixel_values=x).logits
    finally:
        for h in handles:
            h.remove()
    return logits, [grabbed[k] for k in range(len(grabs))]


# --------------------------------------------------------------------------- inputs
RNG = np.random.RandomState(2024)


def image():
    """Pixel values ~N(0, 1), rounded to 4 decimals so the JSON holds them exactly."""
    return np.round(RNG.randn(BATCH, CHANNELS, HEIGHT, WIDTH), 4).tolist()


def pixels(inputs):
    return torch.tensor(inputs["inputs"], dtype=torch.float32)


# --------------------------------------------------------------------------- reference interventions
def zero_channels(locs):
    def fn(t):
        for b, chans in enumerate(locs):
            t[b, chans] = 0.0
        return t
    return fn


def swap_positions(source, src_locs, base_locs):
    """vanilla on unit pos: base[b, :, pos_base[b][k]] = source[b, :, pos_src[b][k]] (flattened h*w)."""
    def fn(t):
        b_, c, h, w = t.shape
        flat = t.reshape(b_, c, h * w)
        src = source.reshape(b_, c, h * w)
        for b in range(b_):
            for ps, pb in zip(src_locs[b], base_locs[b]):
                flat[b, :, pb] = src[b, :, ps]
        return flat.reshape(b_, c, h, w)
    return fn


def add(source):
    return lambda t: t + source


def select_channels(t, locs):
    return torch.stack([t[b, chans] for b, chans in enumerate(locs)])


# --------------------------------------------------------------------------- cases

def cases(model):
    """Yields (name, vene_config, inputs, logits, collected, changes_output)."""
    base = {"inputs": image()}
    vcfg = {"mode": "parallel", "representations": []}
    logits, _ = run(model, pixels(base))
    yield "plain", vcfg, {"base": base}, logits, [], False

    base = {"inputs": image()}
    locs = [[1, 3], [1, 3]]
    vcfg = {"mode": "parallel", "representations": [rep(0, "block_output", "zero", unit="channel", n=2)]}
    logits, _ = run(model, pixels(base), edits=[("block_output", 0, zero_channels(locs))])
    yield "zero_channels", vcfg, {"base": base, "unit_locations": {"base": [locs]}}, logits, [], True

    base, source = {"inputs": image()}, {"inputs": image()}
    src_locs, base_locs = [[0, 5], [2, 3]], [[0, 5], [2, 3]]
    vcfg = {"mode": "parallel", "representations": [rep(1, "stage_output", "vanilla", unit="pos", n=2)]}
    _, (src,) = run(model, pixels(source), grabs=[("stage_output", 1)])
    logits, _ = run(model, pixels(base), edits=[("stage_output", 1, swap_positions(src, src_locs, base_locs))])
    yield "vanilla_spatial", vcfg, {
        "base": base,
        "sources": [source],
        "unit_locations": {"sources->base": [[src_locs], [base_locs]]},
    }, logits, [], True

    base = {"inputs": image()}
    locs = [[0, 2], [4, 5]]
    vcfg = {"mode": "parallel", "representations": [rep(2, "block_input", "collect", unit="channel", n=2)]}
    logits, (inp,) = run(model, pixels(base), grabs=[("block_input", 2)])
    yield "collect_block_input", vcfg, {"base": base, "unit_locations": {"base": [locs]}}, logits, \
        [select_channels(inp, locs)], False

    base, source = {"inputs": image()}, {"inputs": image()}
    vcfg = {"mode": "parallel", "representations": [rep(0, "embedder_output", "addition")]}
    _, (src,) = run(model, pixels(source), grabs=[("embedder_output", 0)])
    logits, _ = run(model, pixels(base), edits=[("embedder_output", 0, add(src))])
    yield "addition_embedder", vcfg, {"base": base, "sources": [source]}, logits, [], True


# --------------------------------------------------------------------------- writing


# --------------------------------------------------------------------------- main
def main():
    check_versions()
    reset_dir(MODEL_DIR, CASES_DIR)
    os.makedirs(CASES_DIR)

    built = build_model()
    built.save_pretrained(MODEL_DIR, safe_serialization=True)
    model = load_model()
    x = torch.zeros(BATCH, CHANNELS, HEIGHT, WIDTH)
    sd_built, sd_loaded = built.state_dict(), model.state_dict()
    assert sd_built.keys() == sd_loaded.keys()
    assert all(torch.equal(sd_built[k], sd_loaded[k]) for k in sd_built), "reloaded model differs"

    sites = [("embedder_output", 0)] + [(c, i) for i in range(len(blocks(model)))
                                        for c in ("block_input", "block_output")]
    sites += [("stage_output", s) for s in range(len(model.resnet.encoder.stages))] + [("pooler_output", 0)]
    _, acts = run(model, x, grabs=sites)
    print(f"site shapes for pixel_values {tuple(x.shape)}:")
    for (component, layer), a in zip(sites, acts):
        print(f"  {component:16s} layer {layer}  {tuple(a.shape)}")

    report = []
    for name, vcfg, inputs, logits, collected, changes in cases(model):
        plain, _ = run(model, pixels(inputs["base"]))
        diff = (logits - plain).abs().max().item()
        if changes:
            assert diff > 1e-3, f"{name}: intervention did not change the output ({diff})"
        else:
            assert diff == 0.0, f"{name}: output changed ({diff})"
        write_case(CASES_DIR, name, vcfg, inputs, logits, collected, compact_rows=True)
        report.append((name, diff, [tuple(c.shape) for c in collected]))

    print(f"{'case':22s} max|intervened - plain|   collected shapes")
    for name, diff, shapes in report:
        print(f"{name:22s} {diff:12.6g}           {shapes}")


if __name__ == "__main__":
    sys.exit(main())
