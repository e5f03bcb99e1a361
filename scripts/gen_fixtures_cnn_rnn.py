#!/usr/bin/env python3
"""Generates parity fixtures for the CRNN, EfficientNet-Lite and Silero VAD adapters under
tests/fixtures/{crnn,efficientnet,silero}, and reference values for the real checkpoints under
tests/fixtures/real_cnn_rnn.

References:
  CRNN          EasyOCR 1.7.2's own `Model` (easyocr/model/vgg_model.py, read from its PyPI wheel). torch's LSTM
                hides its gates, so the gate sites come from a step-by-step re-statement that is first checked to
                reproduce nn.LSTM's outputs (1e-6).
  EfficientNet  a re-statement of efficientnet_pytorch's Lite forward (the package ships weights only), written
                with torch.nn.functional.
  Silero VAD    a re-statement of the package's tinygrad model (silero_vad/tinygrad_model.py) in torch, first
                checked against the package's own TorchScript model (silero_vad.jit) on the real weights.

Output (deterministic, no network once the wheels are cached):
  tests/fixtures/<family>/model/              seeded random weights in the real layout (CRNN: zip pytorch_model.bin
                                              with EasyOCR's `module.` prefix; EfficientNet: legacy torch format)
  tests/fixtures/<family>/sites.safetensors   input, output, and every site as vene's collect returns it, keyed
                                              "<component>.<layer>": feature maps (b, h*w, c) [unit pos], sequences
                                              (b, T, d) [unit pos], recurrent sites (b, T, d) [unit t], flat (b, d)
  tests/fixtures/real_cnn_rnn/                the real checkpoints (scripts/real-assets.sh) on a stored input: the
                                              reference logits, and every tensor's sum as torch.load reads the legacy
                                              EfficientNet file

Run: scripts/pyref-env.sh && .deps/pyref/bin/python scripts/gen_fixtures_cnn_rnn.py
"""
import json
import math
import os
import subprocess
import sys
import types
import zipfile

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vene")
EASYOCR_WHEEL = "easyocr-1.7.2-py3-none-any.whl"

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


def easyocr_model_class():
    """EasyOCR's recogniser `Model`, imported from its wheel (torchvision, which it imports but this model does not
    use, is stubbed)."""
    wheel = os.path.join(CACHE, "wheels", EASYOCR_WHEEL)
    if not os.path.exists(wheel):
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "-d", os.path.dirname(wheel), "easyocr==1.7.2"], check=True)
    root = os.path.join(CACHE, "easyocr-1.7.2")
    if not os.path.exists(os.path.join(root, "easyocr", "model", "vgg_model.py")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(root, [n for n in archive.namelist() if n.startswith("easyocr/model/")])
    stub = types.ModuleType("torchvision")
    stub.models = types.SimpleNamespace()
    sys.modules.setdefault("torchvision", stub)
    sys.path.insert(0, os.path.join(root, "easyocr"))
    from model.vgg_model import Model  # noqa: E402

    return Model


def seeded(model, seed):
    """Re-initialises every weight from one generator: batch norms near identity, the rest scaled by fan-in."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(1 + torch.randn(module.weight.shape, generator=g) * 0.1)
                module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.1)
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=g) * 0.1)
                module.running_var.copy_(1 + torch.rand(module.running_var.shape, generator=g) * 0.5)
            elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.LSTM)):
                for tensor in module.parameters(recurse=False):
                    fan_in = tensor[0].numel() if tensor.dim() > 1 else tensor.numel()
                    tensor.copy_(torch.randn(tensor.shape, generator=g) / math.sqrt(fan_in))


# --------------------------------------------------------------------------- LSTM re-statement
def lstm_steps(lstm, x, suffix):
    """One direction of a one-layer nn.LSTM, step by step: the sites (b, T, h) in sequence order."""
    w_ih, w_hh = getattr(lstm, "weight_ih_l0" + suffix), getattr(lstm, "weight_hh_l0" + suffix)
    b_ih, b_hh = getattr(lstm, "bias_ih_l0" + suffix), getattr(lstm, "bias_hh_l0" + suffix)
    b, steps, _ = x.shape
    h = c = torch.zeros(b, lstm.hidden_size)
    sites = {n: [None] * steps for n in ("cell_input", "input_gate", "forget_gate", "cell_gate", "output_gate",
                                         "cell_state", "cell_output")}
    order = range(steps - 1, -1, -1) if suffix else range(steps)
    for t in order:
        gates = F.linear(x[:, t], w_ih, b_ih) + F.linear(h, w_hh, b_hh)
        i, f, g, o = gates.chunk(4, -1)
        i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
        c = f * c + i * g
        h = o * c.tanh()
        for name, value in zip(sites, (x[:, t], i, f, g, o, c, h)):
            sites[name][t] = value
    return {name + suffix: torch.stack(values, 1) for name, values in sites.items()}


def crnn_reference(model, image):
    """Output and every vene site of EasyOCR's Model on `image`, checked against the module's own forward."""
    sites = {}
    x = image
    layers = list(model.FeatureExtraction.ConvNet)
    block = 0
    for index, layer in enumerate(layers):
        x = layer(x)
        following = layers[index + 1] if index + 1 < len(layers) else None
        if isinstance(layer, (torch.nn.ReLU, torch.nn.MaxPool2d)) and not isinstance(following, torch.nn.MaxPool2d):
            sites[f"conv_block_output.{block}"] = x.flatten(2).transpose(1, 2)
            block += 1
    assert block == 7, block
    columns = model.AdaptiveAvgPool(x.permute(0, 3, 1, 2)).squeeze(3)
    sites["visual_features.0"] = columns
    x = columns
    for layer, bilstm in enumerate(model.SequenceModeling):
        torch_out, _ = bilstm.rnn(x)
        forward = lstm_steps(bilstm.rnn, x, "")
        backward = lstm_steps(bilstm.rnn, x, "_reverse")
        restated = torch.cat([forward["cell_output"], backward["cell_output_reverse"]], -1)
        difference = (restated - torch_out).abs().max()
        assert difference < 1e-5, f"the LSTM re-statement differs from nn.LSTM by {difference}"
        for name, value in {**forward, **backward}.items():
            sites[f"{name}.{layer}"] = value
        x = bilstm.linear(torch_out)
        sites[f"sequence_output.{layer}"] = x
    output = model.Prediction(x)
    assert (output - model(image, None)).abs().max() < 1e-6
    return output, sites


# --------------------------------------------------------------------------- EfficientNet-Lite re-statement
def same_pad(x, kernel, stride):
    def axis(n):
        out = math.ceil(n / stride)
        total = max((out - 1) * stride + kernel - n, 0)
        return total // 2, total - total // 2

    (top, bottom), (left, right) = axis(x.shape[2]), axis(x.shape[3])
    return F.pad(x, (left, right, top, bottom))


def conv_bn(state, x, conv, bn, stride=1, groups=1, eps=1e-3):
    weight = state[conv + ".weight"]
    x = F.conv2d(same_pad(x, weight.shape[-1], stride), weight, None, stride, 0, 1, groups)
    return F.batch_norm(x, state[bn + ".running_mean"], state[bn + ".running_var"], state[bn + ".weight"],
                        state[bn + ".bias"], False, 0.0, eps)


def efficientnet_reference(state, config, x):
    flat = lambda t: t.flatten(2).transpose(1, 2)  # noqa: E731  (b, c, h, w) -> (b, h*w, c)
    sites = {}
    x = F.relu6(conv_bn(state, x, "_conv_stem", "_bn0", stride=2))
    sites["stem_output.0"] = flat(x)
    index, channels = 0, config["stem_channels"]
    for stage in config["stages"]:
        for repeat in range(stage["repeats"]):
            p = f"_blocks.{index}"
            stride = stage["stride"] if repeat == 0 else 1
            y = x
            if stage["expand_ratio"] != 1:
                y = F.relu6(conv_bn(state, y, p + "._expand_conv", p + "._bn0"))
            sites[f"expand_output.{index}"] = flat(y)
            y = F.relu6(conv_bn(state, y, p + "._depthwise_conv", p + "._bn1", stride, groups=y.shape[1]))
            sites[f"depthwise_output.{index}"] = flat(y)
            y = conv_bn(state, y, p + "._project_conv", p + "._bn2")
            if stride == 1 and channels == stage["out"]:
                y = y + x
            x = y
            sites[f"block_output.{index}"] = flat(x)
            index, channels = index + 1, stage["out"]
    x = F.relu6(conv_bn(state, x, "_conv_head", "_bn1"))
    sites["head_output.0"] = flat(x)
    pooled = x.mean((2, 3))
    sites["pooled.0"] = pooled
    return F.linear(pooled, state["_fc.weight"], state["_fc.bias"]), sites


# --------------------------------------------------------------------------- Silero VAD re-statement
def silero_reference(state, config, audio):
    """Speech probability per chunk and the per-chunk sites, as the package's tinygrad model computes them."""
    chunk, context, fft = config.get("chunk", 512), config.get("context", 64), config.get("n_fft", 256)
    hidden = state["lstm_cell.weight_hh"].shape[1]
    cell = torch.nn.LSTMCell(hidden, hidden)
    cell.load_state_dict({k.removeprefix("lstm_cell."): v for k, v in state.items() if k.startswith("lstm_cell.")})
    padded = F.pad(audio, (context, 0))
    h = c = torch.zeros(audio.shape[0], hidden)
    sites = {n: [] for n in ("cell_input", "input_gate", "forget_gate", "cell_gate", "output_gate", "cell_state",
                             "cell_output", "speech_probability")}
    probabilities = []
    for t in range(audio.shape[1] // chunk):
        x = F.pad(padded[:, t * chunk: t * chunk + context + chunk], (0, fft // 4), mode="reflect").unsqueeze(1)
        x = F.conv1d(x, state["stft_conv.weight"], stride=fft // 2)
        bins = fft // 2 + 1
        x = (x[:, :bins] ** 2 + x[:, bins:] ** 2).sqrt()
        for i, stride in enumerate([1, 2, 2, 1]):
            x = F.conv1d(x, state[f"conv{i + 1}.weight"], state[f"conv{i + 1}.bias"], stride=stride, padding=1).relu()
        x = x.squeeze(-1)
        gates = F.linear(x, cell.weight_ih, cell.bias_ih) + F.linear(h, cell.weight_hh, cell.bias_hh)
        i_, f_, g_, o_ = gates.chunk(4, -1)
        i_, f_, g_, o_ = i_.sigmoid(), f_.sigmoid(), g_.tanh(), o_.sigmoid()
        c = f_ * c + i_ * g_
        h = o_ * c.tanh()
        p = F.conv1d(h.relu().unsqueeze(-1), state["final_conv.weight"], state["final_conv.bias"]).sigmoid()
        p = p.squeeze(1).mean(1, keepdim=True)
        for name, value in zip(sites, (x, i_, f_, g_, o_, c, h, p)):
            sites[name].append(value)
        probabilities.append(p)
    return torch.cat(probabilities, 1), {f"{name}.0": torch.stack(v, 1) for name, v in sites.items()}


def silero_jit(audio):
    """The package's own TorchScript model, chunk by chunk (it keeps its state and context between calls): its
    probabilities, and its weights renamed to the safetensors layout (the .jit ships other weights than
    silero_vad_16k.safetensors, so it checks the architecture, not the file)."""
    path = os.path.join(CACHE, "wheels")
    wheel = [n for n in os.listdir(path) if n.startswith("silero_vad-6.2.3")][0]
    with zipfile.ZipFile(os.path.join(path, wheel)) as archive:
        data = archive.read("silero_vad/data/silero_vad.jit")
    import io

    model = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
    model.reset_states()
    probabilities = torch.cat([model(audio[:, t: t + 512], 16000) for t in range(0, audio.shape[1], 512)], 1)
    names = {"stft.forward_basis_buffer": "stft_conv.weight", "decoder.decoder.2.weight": "final_conv.weight",
             "decoder.decoder.2.bias": "final_conv.bias"}
    for i in range(4):
        names[f"encoder.{i}.reparam_conv.weight"] = f"conv{i + 1}.weight"
        names[f"encoder.{i}.reparam_conv.bias"] = f"conv{i + 1}.bias"
    for leaf in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        names[f"decoder.rnn.{leaf}"] = f"lstm_cell.{leaf}"
    tensors = dict(model._model.named_parameters())
    tensors.update(dict(model._model.named_buffers()))
    return probabilities, {names[k]: v.detach() for k, v in tensors.items()}


def test_signal(samples, seed):
    """A voiced-like signal: harmonics of a gliding pitch under a syllable-rate envelope, plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 16000
    pitch = 140 + 30 * torch.sin(2 * math.pi * 0.7 * t)
    phase = 2 * math.pi * torch.cumsum(pitch, 0) / 16000
    voice = sum(torch.sin(k * phase) / k for k in range(1, 12))
    envelope = (torch.sin(2 * math.pi * 3 * t).clamp(min=0) ** 0.5) * (t > 0.3)
    return (0.3 * voice * envelope + 0.01 * torch.randn(samples, generator=g))[None].float()


# --------------------------------------------------------------------------- writing
def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=1, ensure_ascii=False)
        f.write("\n")


def write_sites(path, image, output, sites):
    tensors = {"input": image, "output": output}
    tensors.update({k: v.contiguous() for k, v in sites.items()})
    save_file({k: v.detach().float().contiguous() for k, v in tensors.items()}, path)


def crnn_fixture(Model):
    out = os.path.join(FIXTURES, "crnn")
    os.makedirs(os.path.join(out, "model"), exist_ok=True)
    characters = "abcdefg"
    model = Model(1, 32, 8, len(characters) + 1).eval()
    seeded(model, 0)
    state = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save(state, os.path.join(out, "model", "pytorch_model.bin"))
    write_json(os.path.join(out, "model", "config.json"),
               {"model_type": "crnn", "input_channel": 1, "output_channel": 32, "hidden_size": 8,
                "characters": characters})
    image = torch.rand(2, 1, 32, 40, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        output, sites = crnn_reference(model, image)
    write_sites(os.path.join(out, "sites.safetensors"), image, output, sites)


EFFICIENTNET_SMALL = {
    "model_type": "efficientnet_lite",
    "stem_channels": 8,
    "head_channels": 24,
    "stages": [
        {"repeats": 1, "kernel": 3, "stride": 1, "expand_ratio": 1, "out": 8},
        {"repeats": 2, "kernel": 3, "stride": 2, "expand_ratio": 3, "out": 12},
        {"repeats": 1, "kernel": 5, "stride": 2, "expand_ratio": 3, "out": 16},
    ],
    "num_labels": 5,
    "batch_norm_eps": 1e-3,
    "padding": "same",
}


def efficientnet_small_state(config):
    g = torch.Generator().manual_seed(2)
    state = {}

    def conv(name, shape):
        state[name + ".weight"] = torch.randn(shape, generator=g) / math.sqrt(shape[1] * shape[2] * shape[3])

    def bn(name, c):
        state[name + ".weight"] = 1 + torch.randn(c, generator=g) * 0.1
        state[name + ".bias"] = torch.randn(c, generator=g) * 0.1
        state[name + ".running_mean"] = torch.randn(c, generator=g) * 0.1
        state[name + ".running_var"] = 1 + torch.rand(c, generator=g) * 0.5
        state[name + ".num_batches_tracked"] = torch.tensor(7)

    conv("_conv_stem", (config["stem_channels"], 3, 3, 3))
    bn("_bn0", config["stem_channels"])
    index, channels = 0, config["stem_channels"]
    for stage in config["stages"]:
        for _ in range(stage["repeats"]):
            p, wide, k = f"_blocks.{index}", channels * stage["expand_ratio"], stage["kernel"]
            if stage["expand_ratio"] != 1:
                conv(p + "._expand_conv", (wide, channels, 1, 1))
                bn(p + "._bn0", wide)
            conv(p + "._depthwise_conv", (wide, 1, k, k))
            bn(p + "._bn1", wide)
            conv(p + "._project_conv", (stage["out"], wide, 1, 1))
            bn(p + "._bn2", stage["out"])
            index, channels = index + 1, stage["out"]
    conv("_conv_head", (config["head_channels"], channels, 1, 1))
    bn("_bn1", config["head_channels"])
    state["_fc.weight"] = torch.randn(config["num_labels"], config["head_channels"], generator=g) * 0.2
    state["_fc.bias"] = torch.randn(config["num_labels"], generator=g) * 0.1
    return state


def efficientnet_fixture():
    out = os.path.join(FIXTURES, "efficientnet")
    os.makedirs(os.path.join(out, "model"), exist_ok=True)
    state = efficientnet_small_state(EFFICIENTNET_SMALL)
    torch.save(state, os.path.join(out, "model", "pytorch_model.bin"), _use_new_zipfile_serialization=False)
    write_json(os.path.join(out, "model", "config.json"), EFFICIENTNET_SMALL)
    image = torch.randn(2, 3, 32, 40, generator=torch.Generator().manual_seed(3))
    output, sites = efficientnet_reference(state, EFFICIENTNET_SMALL, image)
    write_sites(os.path.join(out, "sites.safetensors"), image, output, sites)


SILERO_SMALL = {"model_type": "silero_vad", "chunk": 64, "context": 8, "n_fft": 32, "hidden_size": 8,
                "conv_channels": [8, 6, 6, 8]}


def silero_fixture():
    out = os.path.join(FIXTURES, "silero")
    os.makedirs(os.path.join(out, "model"), exist_ok=True)
    config = SILERO_SMALL
    g = torch.Generator().manual_seed(4)
    bins, hidden = config["n_fft"] // 2 + 1, config["hidden_size"]
    state = {"stft_conv.weight": torch.randn(2 * bins, 1, config["n_fft"], generator=g) * 0.2}
    channels = [bins] + config["conv_channels"]
    for i in range(4):
        state[f"conv{i + 1}.weight"] = torch.randn(channels[i + 1], channels[i], 3, generator=g) / math.sqrt(3 * channels[i])
        state[f"conv{i + 1}.bias"] = torch.randn(channels[i + 1], generator=g) * 0.1
    for name, shape in [("weight_ih", (4 * hidden, hidden)), ("weight_hh", (4 * hidden, hidden)),
                        ("bias_ih", (4 * hidden,)), ("bias_hh", (4 * hidden,))]:
        state[f"lstm_cell.{name}"] = torch.randn(shape, generator=g) / math.sqrt(hidden)
    state["final_conv.weight"] = torch.randn(1, hidden, 1, generator=g) / math.sqrt(hidden)
    state["final_conv.bias"] = torch.randn(1, generator=g) * 0.1
    save_file(state, os.path.join(out, "model", "model.safetensors"))
    write_json(os.path.join(out, "model", "config.json"), config)
    audio = torch.randn(2, 5 * config["chunk"], generator=g) * 0.3
    with torch.no_grad():
        output, sites = silero_reference(state, config, audio)
    write_sites(os.path.join(out, "sites.safetensors"), audio, output, sites)


def real_fixtures(Model):
    """The real checkpoints on stored inputs: EasyOCR on a noise-free synthetic stripe image, EfficientNet on the
    centre crop of chelsea.png (uint8, as vene's preprocessing should produce it)."""
    out = os.path.join(FIXTURES, "real_cnn_rnn")
    os.makedirs(out, exist_ok=True)
    models = os.path.join(CACHE, "models")
    easyocr_state = torch.load(os.path.join(models, "easyocr-english-g2", "pytorch_model.bin"), map_location="cpu",
                               weights_only=True)
    crnn = Model(1, 256, 256, 97).eval()
    crnn.load_state_dict({k.removeprefix("module."): v for k, v in easyocr_state.items()})
    columns = torch.arange(96, dtype=torch.float32)
    image = ((torch.sin(columns / 3.0) > 0.3).float() * 2 - 1).expand(1, 1, 64, 96).contiguous()
    with torch.no_grad():
        crnn_output, _ = crnn_reference(crnn, image)

    legacy = torch.load(os.path.join(models, "efficientnet-lite0", "pytorch_model.bin"), map_location="cpu",
                        weights_only=True)
    with open(os.path.join(REPO, "examples", "models", "efficientnet-lite0", "config.json")) as f:
        config = json.load(f)
    from PIL import Image

    photo = Image.open(os.path.join(CACHE, "photos", "chelsea.png")).convert("RGB")
    w, h = photo.size
    left, top = (w - 224) // 2, (h - 224) // 2
    crop = torch.tensor(np.asarray(photo.crop((left, top, left + 224, top + 224))), dtype=torch.uint8)
    pixels = (crop.permute(2, 0, 1)[None].float() - 127.0) / 128.0
    with torch.no_grad():
        logits, _ = efficientnet_reference(legacy, config, pixels)
    from safetensors.torch import load_file

    silero_state = load_file(os.path.join(models, "silero-vad", "model.safetensors"))
    audio = test_signal(31 * 512, 5)
    with torch.no_grad():
        packaged, jit_state = silero_jit(audio)
        restated, _ = silero_reference(jit_state, {}, audio)
        difference = (restated - packaged).abs().max()
        assert difference < 1e-4, f"the Silero re-statement differs from silero_vad.jit by {difference}"
        silero_output, _ = silero_reference(silero_state, {}, audio)
    save_file({"crnn.input": image, "crnn.output": crnn_output.contiguous(), "efficientnet.crop": crop.contiguous(),
               "efficientnet.output": logits.contiguous(), "silero.input": audio.contiguous(),
               "silero.output": silero_output.contiguous()}, os.path.join(out, "reference.safetensors"))
    sums = {name: [float(t.double().sum()), list(t.shape), str(t.dtype).removeprefix("torch.")]
            for name, t in legacy.items()}
    write_json(os.path.join(out, "efficientnet_lite0_tensors.json"), sums)


def main():
    Model = easyocr_model_class()
    crnn_fixture(Model)
    efficientnet_fixture()
    silero_fixture()
    real_fixtures(Model)


if __name__ == "__main__":
    main()
