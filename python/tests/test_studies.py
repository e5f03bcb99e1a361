"""The study functions return the numbers their `vene` commands write, and write the same files: each is run both
ways on the fixture GPT-2 with a word-level tokenizer (`w0` … `w100` are ids 0 … 100)."""

import json
import shutil
import subprocess

import pytest

import vene
from conftest import FIXTURES, vene_binary


@pytest.fixture(scope="module")
def word_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gpt2-words")
    for name in ("config.json", "model.safetensors"):
        shutil.copy(FIXTURES / "gpt2" / "model" / name, directory / name)
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
        "model": {"type": "WordLevel", "vocab": {f"w{i}": i for i in range(101)}, "unk_token": "w0"},
    }
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer))
    return directory


def cli(*args) -> None:
    binary = vene_binary()
    assert binary.is_file(), "build the workspace first (cargo build --release --workspace)"
    done = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def same_files(cli_out, python_out, names):
    for name in names:
        assert (cli_out / name).read_bytes() == (python_out / name).read_bytes(), name


def test_trace_matches_vene_trace(word_model, tmp_path):
    cli("trace", "--model", word_model, "--prompt", "w1 w2 w3 w4 w5", "--subject", "w2 w3", "--target", "w9",
        "--samples", "2", "--out", tmp_path / "cli")
    calls = []
    found = vene.studies.trace(vene.load(word_model), "w1 w2 w3 w4 w5", "w2 w3", "w9", samples=2,
                               out=tmp_path / "py", progress=lambda done, total: calls.append((done, total)))
    same_files(tmp_path / "cli", tmp_path / "py", ["trace.json", "block_output.svg", "mlp_output.svg"])
    written = json.loads((tmp_path / "cli" / "trace.json").read_text())
    assert {k: found[k] for k in written} == written
    assert found["labels"] == ["w1", "w2*", "w3*", "w4", "w5"]
    assert len(found["block_output"]) == 5 and len(found["block_output"][0]) == 3
    assert calls and calls[-1][0] == calls[-1][1]
    assert "clean" in found["summary"]


def top_word(model, prompt):
    return f"w{int(model(model.tokenize(prompt)).logits[0, -1].argmax())}"


def test_trace_facts_matches_vene_trace_facts(word_model, tmp_path):
    model = vene.load(word_model)
    known = [("w1 w2 w3 w4", "w2"), ("w8 w9 w10", "w8 w9")]
    facts = [{"prompt": p, "subject": s, "target": top_word(model, p)} for p, s in known]
    facts.append({"prompt": "w5 w6 w7", "subject": "w6", "target": "w0" if top_word(model, "w5 w6 w7") != "w0" else "w1"})
    (tmp_path / "facts.jsonl").write_text("\n".join(json.dumps(f) for f in facts))
    cli("trace", "--model", word_model, "--facts", tmp_path / "facts.jsonl", "--samples", "1", "--out", tmp_path / "cli")
    found = vene.studies.trace_facts(model, facts, samples=1, out=tmp_path / "py")
    assert len(found["traced"]) == 2 and len(found["skipped"]) == 1
    same_files(tmp_path / "cli", tmp_path / "py", ["trace.json"])
    assert {k: found[k] for k in ("by_class", "traced", "skipped")} == json.loads((tmp_path / "cli/trace.json").read_text())


def test_das_probe_matches_vene_das_probe(word_model, tmp_path):
    cli("das-probe", "--model", word_model, "--template", "{name} w5 w6", "--class", "w1=w10,w11,w12,w13,w14",
        "--class", "w2=w20,w21,w22", "--epochs", "2", "--out", tmp_path / "cli")
    found = vene.studies.das_probe(vene.load(word_model), "{name} w5 w6",
                                   {"w1": ["w10", "w11", "w12", "w13", "w14"], "w2": ["w20", "w21", "w22"]},
                                   epochs=2, out=tmp_path / "py")
    same_files(tmp_path / "cli", tmp_path / "py", ["das_probe.json"])
    assert len(found["das_iia"]) == 3  # positions × layers


PATH_PROMPTS = [
    {"clean": "w5 w9 w12 w5 w40", "corrupted": "w7 w9 w30 w8 w40", "target": "w5", "distractor": "w12"},
    {"clean": "w3 w3 w61 w17", "corrupted": "w2 w44 w61 w90", "target": "w17", "distractor": "w3"},
]


def test_path_patch_matches_vene_path_patch(word_model, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(p) for p in PATH_PROMPTS))
    cli("path-patch", "--model", word_model, "--prompts", prompts, "--senders", "1.0,1.2,2.3", "--out", tmp_path / "cli")
    found = vene.studies.path_patch(vene.load(word_model), PATH_PROMPTS, senders=[(1, 0), (1, 2), (2, 3)],
                                    out=tmp_path / "py")
    same_files(tmp_path / "cli", tmp_path / "py", ["path_patching.json", "senders_to_logits.svg"])
    assert [(s["layer"], s["head"]) for s in found["senders"]] == [(1, 0), (1, 2), (2, 3)]
    with pytest.raises(vene.VeneError, match=r'invalid receivers: "queries" \(valid: logits, query, key, value\)'):
        vene.studies.path_patch(vene.load(word_model), PATH_PROMPTS, receivers="queries")


def test_attribute_matches_vene_attribute(word_model, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(p) for p in PATH_PROMPTS))
    cli("attribute", "--model", word_model, "--prompts", prompts, "--top-k", "6", "--random-k", "3", "--out",
        tmp_path / "cli")
    found = vene.attribute(vene.load(word_model), PATH_PROMPTS, top_k=6, random_k=3, out=tmp_path / "py")
    same_files(tmp_path / "cli", tmp_path / "py", ["attribution.json", "attribution_scores.safetensors",
                                                    "attribution_head_attention_value_output.svg"])
    assert [c["component"] for c in found["components"]] == [
        "block_output", "attention_output", "mlp_output", "head_attention_value_output"]
    assert [v["chosen"] for v in found["verified"]] == ["top"] * 6 + ["random"] * 3
    estimates = [abs(v["estimate"]) for v in found["verified"][:6]]
    assert estimates == sorted(estimates, reverse=True)
    with pytest.raises(vene.VeneError, match=r'metric "kl-div" is not one of logit-diff, prob, logprob, kl'):
        vene.attribute(vene.load(word_model), PATH_PROMPTS, metric="kl-div")
    with pytest.raises(vene.VeneError, match=r"AtP takes the metric's gradient at the clean run"):
        vene.attribute(vene.load(word_model), PATH_PROMPTS, metric="kl")
    kl = vene.attribute(vene.load(word_model), PATH_PROMPTS, metric="kl", ig_steps=3, top_k=2, random_k=0)
    assert kl["metric"] == "kl" and abs(kl["clean"]) < 1e-12 and kl["corrupted"] > 0
    with pytest.raises(vene.VeneError, match=r'no component "mlp_neurons" to attribute to'):
        vene.attribute(vene.load(word_model), PATH_PROMPTS, components=["mlp_neurons"])
    fixed = vene.attribute(vene.load(word_model), PATH_PROMPTS, qk_fix=True, top_k=0, random_k=0)
    assert fixed["method"] == "AtP* (query/key fix)"
    assert [c["component"] for c in fixed["components"]][-2:] == ["head_query_output", "head_key_output"]


def test_circuit_matches_vene_circuit(word_model, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(p) for p in PATH_PROMPTS))
    cli("circuit", "--model", word_model, "--prompts", prompts, "--top-k", "4", "--random-k", "2", "--ig-steps", "3",
        "--out", tmp_path / "cli")
    found = vene.circuit(vene.load(word_model), PATH_PROMPTS, top_k=4, random_k=2, ig_steps=3, out=tmp_path / "py")
    same_files(tmp_path / "cli", tmp_path / "py", ["circuit.json", "circuit_scores.safetensors", "circuit.svg"])
    assert found["method"] == "EAP-IG (3 steps)"
    scores = [abs(e["score"]) for e in found["edges"]]
    assert scores == sorted(scores, reverse=True)
    assert [e.get("chosen") for e in found["edges"][:4]] == ["top"] * 4
    assert sum(1 for e in found["edges"] if e.get("chosen") == "random") == 2
    ends = found["curve"][0], found["curve"][-1]
    assert ends[0]["edges"] == 0 and abs(ends[0]["metric"] - found["corrupted"]) < 1e-4
    assert ends[1]["edges"] == len(found["edges"]) and abs(ends[1]["metric"] - found["clean"]) < 1e-4
    with pytest.raises(vene.VeneError, match=r"faithfulness 2 is not a share between 0 and 1"):
        vene.circuit(vene.load(word_model), PATH_PROMPTS, faithfulness=2.0)
    cli("circuit", "--model", word_model, "--prompts", prompts, "--top-k", "2", "--random-k", "0", "--ig-steps", "2",
        "--metric", "kl", "--per-head", "--sizes", "0", "--out", tmp_path / "cli_heads")
    heads = vene.circuit(vene.load(word_model), PATH_PROMPTS, top_k=2, random_k=0, ig_steps=2, metric="kl",
                         per_head=True, sizes=[0], out=tmp_path / "py_heads")
    same_files(tmp_path / "cli_heads", tmp_path / "py_heads", ["circuit.json", "circuit_scores.safetensors"])
    layer_level = {(e["sender"], e["receiver"]): e["score"] for e in vene.circuit(
        vene.load(word_model), PATH_PROMPTS, top_k=0, random_k=0, ig_steps=2, metric="kl", sizes=[0])["edges"]}
    counts = heads["heads"]
    assert heads["metric"] == "kl" and counts["query"] >= 2 and abs(heads["clean"]) < 1e-12

    def part_of(part, whole):
        return part == whole or part.startswith(whole + ".h")
    for (sender, receiver), score in layer_level.items():
        parts = [e["score"] for e in heads["edges"] if part_of(e["sender"], sender) and part_of(e["receiver"], receiver)]
        senders = counts["query"] if sender.startswith("a") else 1
        receivers = counts["query"] + 2 * counts["key_value"] if receiver.startswith("a") else 1
        assert len(parts) == senders * receivers
        assert abs(sum(parts) - score) < 1e-5 * (1 + abs(score))


def test_interchange_search_matches_vene_interchange_search(word_model, tmp_path):
    wordings = [{"base": "w1 w2 w3 w4", "attribute_source": "w1 w5 w3 w4", "entity_source": "w1 w2 w6 w4"},
                {"base": "w8 w2 w3", "attribute_source": "w8 w9 w3", "entity_source": "w8 w2 w10"}]
    (tmp_path / "wordings.jsonl").write_text("\n".join(json.dumps(w) for w in wordings))
    cli("interchange-search", "--model", word_model, "--wordings", tmp_path / "wordings.jsonl", "--target", "w7",
        "--out", tmp_path / "cli")
    found = vene.studies.interchange_search(vene.load(word_model), wordings, "w7", out=tmp_path / "py")
    same_files(tmp_path / "cli", tmp_path / "py", ["interchange_search.json"])
    assert found["attempts"]


def test_steer_sentiment_matches_vene_steer_sentiment(word_model, tmp_path):
    for name, text in [("openings.txt", "w1 w2 w3\nw8 w9\n"), ("positive.txt", "w4\n"), ("negative.txt", "w5\n")]:
        (tmp_path / name).write_text(text)
    cli("steer-sentiment", "--model", word_model, "--openings", tmp_path / "openings.txt", "--positive",
        tmp_path / "positive.txt", "--negative", tmp_path / "negative.txt", "--word", "w6", "--word", "w7",
        "--coefficient", "1", "--sweep", "0.5,2", "--max-new-tokens", "3", "--out", tmp_path / "cli")
    found = vene.studies.steer_sentiment(vene.load(word_model), ["w1 w2 w3", "w8 w9"], ["w4"], ["w5"],
                                         words=["w6", "w7"], coefficient=1, sweep=[0.5, 2], max_new_tokens=3,
                                         out=tmp_path / "py")
    same_files(tmp_path / "cli", tmp_path / "py", ["steer_sentiment.json", "shift.svg", "sweep.svg"])
    assert len(found["side_by_side"]) == 6 and len(found["sweep"]) == 4


def test_study_errors_are_clear(word_model):
    model = vene.load(word_model)
    with pytest.raises(vene.VeneError, match=r"the subject \"w7\" is not a token span of the prompt \"w1 w2\""):
        vene.studies.trace(model, "w1 w2", "w7", "w3", samples=1)
    with pytest.raises(vene.VeneError, match=r"has no tokenizer"):
        vene.studies.trace(vene.load(FIXTURES / "mlp" / "model"), "a b", "a", "b")


def test_real_cnn_rnn_studies_match_their_commands(tmp_path):
    """The real CRNN and Silero VAD (installed by scripts/setup.sh, by name): the Python functions write what the
    commands write, and find what the Rust tests assert (each read character carried near its column; the model
    forgets a zeroed state within 20 chunks)."""
    crnn = vene.load("easyocr-english-g2")
    cli("ocr-steps", "--model", "easyocr-english-g2", "--pairs", "cat:dog", "--out", tmp_path / "cli")
    found = vene.studies.ocr_steps(crnn, [("cat", "dog")], out=tmp_path / "py")
    same_files(tmp_path / "cli", tmp_path / "py", ["ocr_steps.json", "cat_dog_lstm.svg", "cat_dog_words.png"])
    pair = found["pairs"][0]
    assert pair["base_read"] == "cat" and pair["source_read"] == "dog"
    for column, row in zip(pair["columns"], pair["lstm"]["drop"]):
        step = max(range(len(row)), key=row.__getitem__)
        assert row[step] <= 0.5 or abs(step - column) <= 3, (column, step)
    vad = vene.studies.vad_state(vene.load("silero-vad"), ["one two three four five"])
    for intervention in vad["interventions"]:
        assert 1 <= intervention["chunks_to_recover"] <= 20, intervention["name"]
    das_args = dict(crops=6, blocks=[15], pairs=16, epochs=1)
    cli("image-das", "--model", "efficientnet-lite0", "--positive", "chelsea.png", "--negative", "coffee.png",
        "--crops", "6", "--blocks", "15", "--pairs", "16", "--epochs", "1", "--out", tmp_path / "cli")
    found = vene.studies.image_das(vene.load("efficientnet-lite0"), ["chelsea.png"], ["coffee.png"], **das_args,
                                   out=tmp_path / "py")
    same_files(tmp_path / "cli", tmp_path / "py", ["image_das.json", "image_das.svg"])
    assert found["blocks"] == [15] and found["probe_accuracy"][0] >= 0.9, found
    with pytest.raises(vene.VeneError, match=r"needs photos with and without it"):
        vene.studies.image_das(vene.load("efficientnet-lite0"), ["chelsea.png"], [], **das_args)
    with pytest.raises(vene.VeneError, match=r"a grid of 5 does not divide"):
        vene.studies.cnn_trace(vene.load("efficientnet-lite0"), [tmp_path / "py" / "cat_dog_words.png"], grid=5,
                               samples=1)
