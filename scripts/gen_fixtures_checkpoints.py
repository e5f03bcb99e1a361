#!/usr/bin/env python3
"""Generates checkpoint-format fixtures under tests/fixtures/checkpoints (deterministic, no network).

  gpt2_bin/            the fixture GPT-2 (tests/fixtures/gpt2/model) as config.json + pytorch_model.bin (torch.save)
  pickles/os_system.bin      a torch-style zip whose data.pkl calls os.system when unpickled (must be refused)
  pickles/builtins_eval.bin  the same with builtins.eval
  pickles/truncated.bin      a valid state dict cut short
  pickles/oversized.bin      a state dict whose pickle declares more elements than its storage holds
  pickles/legacy.pth         a state dict in torch's legacy (pre-zip) format: float, int64, half, a transposed view
                             and two tensors sharing one storage
  pickles/legacy_truncated.pth  the same cut inside its raw storages

Run: scripts/pyref-env.sh && .deps/pyref/bin/python scripts/gen_fixtures_checkpoints.py
"""
import io
import os
import pickle
import shutil
import zipfile

import torch
from safetensors.torch import load_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(REPO, "tests", "fixtures", "gpt2", "model")
OUT = os.path.join(REPO, "tests", "fixtures", "checkpoints")
FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def torch_zip(path, pickle_bytes, storages):
    """Writes a zip laid out like torch.save: archive/data.pkl, archive/data/<key>, archive/version."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in [("archive/data.pkl", pickle_bytes), ("archive/version", b"3\n")] + [
            (f"archive/data/{key}", data) for key, data in storages
        ]:
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            archive.writestr(info, data)


class Payload:
    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return (self.function, (self.argument,))


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(os.path.join(OUT, "gpt2_bin"))
    os.makedirs(os.path.join(OUT, "pickles"))

    # GPT-2 as pytorch_model.bin: lm_head.weight shares wte's storage, as transformers saves it.
    state = load_file(os.path.join(SOURCE, "model.safetensors"))
    state["lm_head.weight"] = state["transformer.wte.weight"]
    buffer = io.BytesIO()
    torch.save(state, buffer)
    # torch.save stamps no time into the zip, so the bytes are reproducible.
    with open(os.path.join(OUT, "gpt2_bin", "pytorch_model.bin"), "wb") as f:
        f.write(buffer.getvalue())
    shutil.copy(os.path.join(SOURCE, "config.json"), os.path.join(OUT, "gpt2_bin", "config.json"))

    # Hostile pickles: unpickling them would run a shell command or eval.
    torch_zip(os.path.join(OUT, "pickles", "os_system.bin"), pickle.dumps(Payload(os.system, "echo pwned"), protocol=2), [])
    import builtins

    torch_zip(
        os.path.join(OUT, "pickles", "builtins_eval.bin"),
        pickle.dumps(Payload(builtins.eval, "__import__('os').system('echo pwned')"), protocol=2),
        [],
    )

    # A valid small state dict, then damaged copies of it.
    small = io.BytesIO()
    torch.save({"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, small)
    data = small.getvalue()
    with open(os.path.join(OUT, "pickles", "truncated.bin"), "wb") as f:
        f.write(data[: len(data) // 2])
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        pickled = archive.read(next(n for n in names if n.endswith("data.pkl")))
        storage = archive.read(next(n for n in names if "/data/" in n))
    # Claim 2**40 elements for a 24-byte storage (and a matching size), so a reader that trusts the header would
    # try to allocate 4 TiB.
    hostile = pickled.replace(b"K\x06", b"\x8a\x06\x00\x00\x00\x00\x00\x01", 1)
    assert hostile != pickled, "numel 6 not found in the pickle"
    torch_zip(os.path.join(OUT, "pickles", "oversized.bin"), hostile, [("0", storage)])

    # The legacy layout: five pickles, then raw storages.
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 4
    legacy_state = {
        "weight": base,
        "transposed": base.t(),
        "row": base[1],
        "steps": torch.arange(5, dtype=torch.int64) * 1000,
        "half": torch.tensor([0.5, -1.25, 3.0], dtype=torch.float16),
    }
    legacy = io.BytesIO()
    torch.save(legacy_state, legacy, _use_new_zipfile_serialization=False)
    legacy = legacy.getvalue()
    with open(os.path.join(OUT, "pickles", "legacy.pth"), "wb") as f:
        f.write(legacy)
    with open(os.path.join(OUT, "pickles", "legacy_truncated.pth"), "wb") as f:
        f.write(legacy[:-10])

    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write(__doc__)


if __name__ == "__main__":
    main()
