#!/usr/bin/env python3
"""The real CNN and recurrent models: one intervened forward through vene (called from Python) against the same
intervention written with torch hooks on the PyTorch reference modules, same weights, same inputs, same process.

  EasyOCR CRNN       batch 8 of rendered-size strips (1 x 64 x 128): visual_features column 10 swapped from a source
                     batch. Reference: EasyOCR 1.7.2's own Model with a forward hook on AdaptiveAvgPool.
  EfficientNet-Lite0 batch 8 of 224 x 224 photos: block 8's output at 16 spatial positions swapped from a source
                     batch. Reference: an nn.Module re-statement (the package ships weights only) with a forward hook
                     on block 8.
  Silero VAD         batch 8 of 2 s of audio (62 chunks): the LSTM state (h, c) at chunk 20 zeroed. Reference: the
                     same re-statement as the fixtures, as a chunk loop with the zeroing written into it (torch's
                     LSTMCell offers no per-step hook, so hand-written code is what a torch user writes).

Each side: median of --repeats calls after a warm-up, no gradients, f32, torch's threads as set by the environment.
The outputs are compared (max |vene - torch|).

Run: scripts/pyref-env.sh && ./scripts/python.sh &&
     .deps/pyref/bin/python -m pip install --no-deps --force-reinstall target/wheels/vene-*.whl &&
     .deps/pyref/bin/python scripts/compare_cnn_rnn.py [--repeats 10] [--threads 2]
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_fixtures_cnn_rnn as reference  # noqa: E402

import vene  # noqa: E402

MODELS = os.path.join(reference.CACHE, "models")
BATCH = 8


def median_seconds(call, repeats):
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(name, vene_seconds, torch_seconds, difference):
    print(f"{name}: vene {vene_seconds * 1e3:.1f} ms, torch hooks {torch_seconds * 1e3:.1f} ms "
          f"(vene / torch {vene_seconds / torch_seconds:.2f}); max |vene - torch| {difference:.1e}")


def crnn(repeats):
    Model = reference.easyocr_model_class()
    state = torch.load(os.path.join(MODELS, "easyocr-english-g2", "pytorch_model.bin"), map_location="cpu", weights_only=True)
    module = Model(1, 256, 256, 97).eval()
    module.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    g = torch.Generator().manual_seed(0)
    base, source = (torch.rand(BATCH, 1, 64, 128, generator=g) * 2 - 1 for _ in range(2))
    column = 10

    def hooked():
        saved = {}
        handle = module.AdaptiveAvgPool.register_forward_hook(lambda m, i, o: saved.__setitem__("o", o))
        module(source, None)
        handle.remove()

        def swap(m, i, o):
            o = o.clone()
            o[:, column] = saved["o"][:, column]
            return o

        handle = module.AdaptiveAvgPool.register_forward_hook(swap)
        out = module(base, None)
        handle.remove()
        return out

    config = {"representations": [{"layer": 0, "component": "visual_features", "unit": "pos",
                                   "max_number_of_units": 1, "intervention": {"type": "vanilla"}}]}
    ours = vene.IntervenableModel(config, vene.load(os.path.join(MODELS, "easyocr-english-g2")))
    where = [[[column]] * BATCH]
    run = lambda: ours({"inputs": base}, [{"inputs": source}], unit_locations={"sources->base": (where, where)})[1]  # noqa: E731
    with torch.no_grad():
        difference = (run().logits - hooked()).abs().max().item()
        report("EasyOCR CRNN", median_seconds(run, repeats), median_seconds(hooked, repeats), difference)


class Lite(torch.nn.Module):
    """EfficientNet-Lite0 as modules (the fixtures' functional re-statement, block by block) so hooks can attach."""

    class Block(torch.nn.Module):
        def __init__(self, state, config, index, stride, residual):
            super().__init__()
            self.state, self.config, self.index, self.stride, self.residual = state, config, index, stride, residual

        def forward(self, x):
            p, s = f"_blocks.{self.index}", self.state
            y = x
            if f"{p}._expand_conv.weight" in s:
                y = F.relu6(reference.conv_bn(s, y, p + "._expand_conv", p + "._bn0"))
            y = F.relu6(reference.conv_bn(s, y, p + "._depthwise_conv", p + "._bn1", self.stride, groups=y.shape[1]))
            y = reference.conv_bn(s, y, p + "._project_conv", p + "._bn2")
            return y + x if self.residual else y

    def __init__(self, state, config):
        super().__init__()
        self.state = state
        blocks, channels = [], config["stem_channels"]
        for stage in config["stages"]:
            for repeat in range(stage["repeats"]):
                stride = stage["stride"] if repeat == 0 else 1
                blocks.append(Lite.Block(state, config, len(blocks), stride, stride == 1 and channels == stage["out"]))
                channels = stage["out"]
        self.blocks = torch.nn.ModuleList(blocks)

    def forward(self, x):
        s = self.state
        x = F.relu6(reference.conv_bn(s, x, "_conv_stem", "_bn0", stride=2))
        for block in self.blocks:
            x = block(x)
        x = F.relu6(reference.conv_bn(s, x, "_conv_head", "_bn1"))
        return F.linear(x.mean((2, 3)), s["_fc.weight"], s["_fc.bias"])


def efficientnet(repeats):
    import json

    directory = os.path.join(MODELS, "efficientnet-lite0")
    state = torch.load(os.path.join(directory, "pytorch_model.bin"), map_location="cpu", weights_only=True)
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    module = Lite(state, config).eval()
    g = torch.Generator().manual_seed(0)
    base, source = (torch.randn(BATCH, 3, 224, 224, generator=g) for _ in range(2))
    block, positions = 8, list(range(40, 56))

    def hooked():
        saved = {}
        handle = module.blocks[block].register_forward_hook(lambda m, i, o: saved.__setitem__("o", o))
        module(source)
        handle.remove()

        def swap(m, i, o):
            flat = o.flatten(2).clone()
            flat[:, :, positions] = saved["o"].flatten(2)[:, :, positions]
            return flat.view_as(o)

        handle = module.blocks[block].register_forward_hook(swap)
        out = module(base)
        handle.remove()
        return out

    config_vene = {"representations": [{"layer": block, "component": "block_output", "unit": "pos",
                                        "max_number_of_units": len(positions), "intervention": {"type": "vanilla"}}]}
    ours = vene.IntervenableModel(config_vene, vene.load(directory))
    where = [[positions] * BATCH]
    run = lambda: ours({"inputs": base}, [{"inputs": source}], unit_locations={"sources->base": (where, where)})[1]  # noqa: E731
    with torch.no_grad():
        difference = (run().logits - hooked()).abs().max().item()
        report("EfficientNet-Lite0", median_seconds(run, repeats), median_seconds(hooked, repeats), difference)


def silero(repeats):
    from safetensors.torch import load_file

    state = load_file(os.path.join(MODELS, "silero-vad", "model.safetensors"))
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(BATCH, 62 * 512, generator=g) * 0.1
    chunk = 20

    def hooked():
        """The re-statement's chunk loop with the state zeroed at `chunk`."""
        padded = F.pad(audio, (64, 0))
        h = c = torch.zeros(BATCH, 128)
        out = []
        for t in range(audio.shape[1] // 512):
            x = F.pad(padded[:, t * 512: t * 512 + 576], (0, 64), mode="reflect").unsqueeze(1)
            x = F.conv1d(x, state["stft_conv.weight"], stride=128)
            x = (x[:, :129] ** 2 + x[:, 129:] ** 2).sqrt()
            for i, stride in enumerate([1, 2, 2, 1]):
                x = F.conv1d(x, state[f"conv{i + 1}.weight"], state[f"conv{i + 1}.bias"], stride=stride, padding=1).relu()
            gates = F.linear(x.squeeze(-1), state["lstm_cell.weight_ih"], state["lstm_cell.bias_ih"]) + F.linear(
                h, state["lstm_cell.weight_hh"], state["lstm_cell.bias_hh"])
            i_, f_, g_, o_ = gates.chunk(4, -1)
            c = f_.sigmoid() * c + i_.sigmoid() * g_.tanh()
            h = o_.sigmoid() * c.tanh()
            if t == chunk:
                h, c = torch.zeros_like(h), torch.zeros_like(c)
            p = F.conv1d(h.relu().unsqueeze(-1), state["final_conv.weight"], state["final_conv.bias"]).sigmoid()
            out.append(p.squeeze(1).mean(1, keepdim=True))
        return torch.cat(out, 1)

    config = {"representations": [
        {"layer": 0, "component": site, "unit": "t", "max_number_of_units": 1, "intervention": {"type": "zero"}}
        for site in ("cell_state", "cell_output")]}
    ours = vene.IntervenableModel(config, vene.load(os.path.join(MODELS, "silero-vad")))
    where = [[[chunk]] * BATCH] * 2
    run = lambda: ours({"inputs": audio}, unit_locations={"base": where})[1]  # noqa: E731
    with torch.no_grad():
        difference = (run().logits - hooked()).abs().max().item()
        report("Silero VAD", median_seconds(run, repeats), median_seconds(hooked, repeats), difference)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="torch's (and so vene's) intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # the fixture module, imported for its references, sets 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}")
    crnn(args.repeats)
    efficientnet(args.repeats)
    silero(args.repeats)


if __name__ == "__main__":
    main()
