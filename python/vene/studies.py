"""The studies of the ``vene`` commands as functions. Each returns the numbers its command writes (a dict; the
figures' data are among them: the heatmaps' grids, the lines' series) with ``summary``, and with ``out=DIR`` also
writes the command's figures (PNG + SVG) and JSON file there. ``progress(done, total)`` is called as work finishes."""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from . import _native
from .model import Model

PathLike = Union[str, os.PathLike]
Progress = Optional[Callable[[int, int], Any]]


def _result(numbers_and_summary: tuple) -> dict:
    numbers, summary = numbers_and_summary
    result = json.loads(numbers)
    result["summary"] = summary
    return result


def _out(out: Optional[PathLike]) -> Optional[str]:
    return None if out is None else os.fspath(out)


def _json_lines(records: Union[PathLike, Sequence[Mapping]]) -> str:
    if isinstance(records, (str, os.PathLike)):
        with open(records, encoding="utf-8") as file:
            return file.read()
    return "\n".join(json.dumps(dict(r)) for r in records)


def trace(
    model: Model,
    prompt: str,
    subject: str,
    target: str,
    samples: int = 10,
    noise: float = 3.0,
    window: int = 10,
    seed: int = 0,
    out: Optional[PathLike] = None,
    progress: Progress = None,
) -> dict:
    """Causal tracing (Meng et al.): the subject's embeddings corrupted with noise (``noise`` × the embeddings'
    std), each site restored from the clean run; returns ``clean``, ``corrupted`` and the ``block_output``,
    ``mlp_output``, ``attention_output`` grids (layer × position restored probability of ``target``), ``labels``."""
    return _result(
        _native.trace(model._native, prompt, subject, target, samples, noise, window, seed, _out(out), progress)
    )


def trace_facts(
    model: Model,
    facts: Union[PathLike, Sequence[Mapping]],
    samples: int = 10,
    noise: float = 3.0,
    window: int = 10,
    seed: int = 0,
    out: Optional[PathLike] = None,
    progress: Progress = None,
) -> dict:
    """Every fact (``{"prompt", "subject", "target"}``; a list or a JSON-lines file) the model knows, traced and
    averaged by Meng et al.'s position classes; returns ``by_class``, ``traced`` and ``skipped``."""
    return _result(
        _native.trace_facts(model._native, _json_lines(facts), samples, noise, window, seed, _out(out), progress)
    )


def das_probe(
    model: Model,
    template: str,
    classes: Mapping[str, Sequence[str]],
    positions: Optional[Sequence[int]] = None,
    pairs: Optional[int] = None,
    epochs: int = 8,
    out: Optional[PathLike] = None,
    progress: Progress = None,
) -> dict:
    """Rank-1 DAS against a linear probe at every layer × position of ``template`` (with ``{name}``); ``classes``
    maps each target word to its names. Returns ``das_iia`` and ``probe_accuracy`` grids."""
    class_list = [(target, list(names)) for target, names in classes.items()]
    return _result(
        _native.das_probe(
            model._native, template, class_list, list(positions) if positions else None, pairs, epochs, _out(out),
            progress,
        )
    )


def interchange_search(
    model: Model,
    wordings: Union[PathLike, Sequence[Mapping]],
    target: str,
    component: str = "block_output",
    serial_stride: int = 1,
    out: Optional[PathLike] = None,
    progress: Progress = None,
) -> dict:
    """The multi-source interchange: each wording's attribute and entity sources swapped in at every layer in
    parallel and at every later layer in series, every combination's top 5 recorded."""
    return _result(
        _native.interchange_search(
            model._native, _json_lines(wordings), target, component, serial_stride, _out(out), progress
        )
    )


def steer_sentiment(
    model: Model,
    openings: Sequence[str],
    positive: Sequence[str],
    negative: Sequence[str],
    words: Sequence[str] = (" happy", " sad"),
    coefficient: float = 0.3,
    sweep: Sequence[float] = (0.3, 1.0, 3.0, 10.0),
    component: str = "mlp_output",
    max_new_tokens: int = 20,
    out: Optional[PathLike] = None,
    progress: Progress = None,
) -> dict:
    """Story openings steered towards ``words`` at every layer and step, beside unsteered continuations, with a
    coefficient sweep; the summed probability of the positive and negative word lists along each continuation."""
    return _result(
        _native.steer_sentiment(
            model._native, list(openings), list(positive), list(negative), list(words), coefficient, list(sweep),
            component, max_new_tokens, _out(out), progress,
        )
    )


def path_patch(
    model: Model,
    prompts: Union[PathLike, Sequence[Mapping]],
    receivers: str = "logits",
    senders: Optional[Sequence[Sequence[int]]] = None,
    freeze_mlps: bool = False,
    out: Optional[PathLike] = None,
    progress: Progress = None,
) -> dict:
    """Path patching (Wang et al.): each sender head's output taken from the corrupted prompt with every later head
    (and, with ``freeze_mlps``, every MLP) frozen at its clean value; its effect on the logit difference (target −
    distractor) at the logits or, with ``receivers`` query / key / value, through each later head's input.
    ``prompts``: ``{"clean", "corrupted", "target", "distractor"}`` records or a JSON-lines file; ``senders``:
    ``(layer, head)`` pairs (default: every head). Effects are ``(patched − clean) / (clean − corrupted)``."""
    pairs = [tuple(map(int, s)) for s in senders] if senders is not None else None
    return _result(
        _native.path_patch(model._native, _json_lines(prompts), receivers, pairs, freeze_mlps, _out(out), progress)
    )


def attribute(
    model: Model,
    prompts: Union[PathLike, Sequence[Mapping]],
    metric: str = "logit-diff",
    components: Optional[Sequence[str]] = None,
    ig_steps: int = 0,
    qk_fix: bool = False,
    grad_drop: bool = False,
    top_k: int = 20,
    random_k: int = 10,
    verify_all: bool = False,
    seed: int = 0,
    out: Optional[PathLike] = None,
    progress: Progress = None,
) -> dict:
    """Attribution patching (AtP; with ``ig_steps`` k, integrated gradients over k interpolations of the input
    embeddings): every node's effect on ``metric`` (``"logit-diff"`` target − distractor, ``"prob"``, ``"logprob"``,
    ``"kl"`` the KL divergence from the clean run's next-token distribution, with ``ig_steps`` ≥ 1 only: its gradient
    at the clean run is zero) estimated as ``(a_corrupted − a_clean) · ∂metric/∂a`` from one corrupted pass, one clean pass and a backward.
    ``prompts`` as for :func:`path_patch`; ``components`` default to block, attention and MLP outputs and each head's
    output. ``qk_fix``: AtP*'s query/key fix — ``head_query_output`` and ``head_key_output`` nodes (added to the
    default components) scored with their attention patterns recomputed exactly, not through the softmax's gradient;
    ``grad_drop``: AtP*'s GradDrop score per node (``["components"][i]["grad_drop"]``), which then picks the top nodes.
    ``["components"][i]["scores"][layer][head][position]`` are the estimates; ``["verified"]`` the top ``top_k`` by
    |estimate| and ``random_k`` others patched exactly, each with ``estimate`` and ``exact``."""
    return _result(_native.attribute(model._native, _json_lines(prompts), metric,
                                     None if components is None else list(components), ig_steps, qk_fix, grad_drop,
                                     top_k, random_k, verify_all, seed, _out(out), progress))


def circuit(
    model: Model,
    prompts: Union[PathLike, Sequence[Mapping]],
    metric: str = "logit-diff",
    ig_steps: int = 0,
    top_k: int = 20,
    random_k: int = 10,
    verify_all: bool = False,
    sizes: Optional[Sequence[int]] = None,
    keep: Optional[int] = None,
    faithfulness: float = 0.8,
    per_head: bool = False,
    seed: int = 0,
    out: Optional[PathLike] = None,
    progress: Progress = None,
) -> dict:
    """Edge attribution patching (EAP; with ``ig_steps`` k, EAP-IG) on the residual-stream graph: senders are the
    input embeddings and each layer's attention and MLP output, receivers each attention's and MLP's input and the
    logits. Every edge is scored ``(c_corrupted − c_clean) · ∂metric/∂x_receiver``; ``["edges"]`` lists them by
    |score| (``sender``, ``receiver``, ``score``, and ``exact`` for the top ``top_k`` and ``random_k`` others patched
    alone). ``["curve"]``: circuits of the top n edges (``sizes``) run with every other edge patched from the
    corrupted prompts, with the share of ``clean − corrupted`` each recovers (``faithfulness``); ``["circuit"]`` the
    one drawn: ``keep`` edges, or the smallest on the curve reaching ``faithfulness``. ``per_head``: the head-level
    graph — each head a sender (``a3.h1``: what it writes into the residual stream) and a receiver through its query,
    key and value inputs (``a3.h1.q``, ``a3.h0.k``, ``a3.h0.v``), instead of one node per attention layer.
    ``metric`` as for :func:`attribute` (``"kl"`` with ``ig_steps`` ≥ 1)."""
    return _result(_native.circuit(model._native, _json_lines(prompts), metric, ig_steps, top_k, random_k, verify_all,
                                   None if sizes is None else [int(n) for n in sizes], keep, faithfulness, per_head,
                                   seed, _out(out), progress))


def ocr_steps(model: Model, pairs: Sequence[Sequence[str]] = (("hello", "world"), ("cat", "dog"), ("time", "step")),
              layer: int = 0, out: Optional[PathLike] = None) -> dict:
    """A CRNN (``vene.load("easyocr-english-g2")``) reading rendered words: for each ``(base, source)`` pair, the
    source's BiLSTM state (layer ``layer``, h and c, both directions) and the CNN column the LSTM reads swapped into
    the base at each step t; per read character, the probability it loses (``pairs[i]["lstm"]["drop"][char][t]``)."""
    return _result(_native.ocr_steps(model._native, [(str(a), str(b)) for a, b in pairs], layer, _out(out)))


def cnn_trace(model: Model, photos: Sequence[PathLike], grid: int = 7, noise: float = 2.0, samples: int = 2,
              seed: int = 0, out: Optional[PathLike] = None) -> dict:
    """Causal tracing on an image classifier (``vene.load("efficientnet-lite0")``): each photo noised, one region of a
    ``grid`` × ``grid`` array over one block's output restored at a time (``photos[i]["trace"]["restored"][block]
    [region]`` = p(clean class)), and each photo's regions swapped into the previous one."""
    return _result(_native.cnn_trace(model._native, [os.fspath(p) for p in photos], grid, noise, samples, seed,
                                     _out(out)))


def image_das(model: Model, positive: Sequence[PathLike], negative: Sequence[PathLike], attribute: str = "animal",
              classes: Optional[Sequence[int]] = None, crops: int = 24, blocks: Optional[Sequence[int]] = None,
              pairs: int = 96, epochs: int = 3, seed: int = 0, out: Optional[PathLike] = None) -> dict:
    """Rank-1 DAS versus a linear probe, block by block, on an image classifier (``vene.load("efficientnet-lite0")``)
    for a binary attribute: random crops of the ``positive`` and ``negative`` photos (files, or installed names such as
    ``"chelsea.png"``); the model's "yes" is the total probability of ``classes`` (default ImageNet's animals,
    0–397). ``["das_iia"][i]`` is the held-out IIA of one channel direction swapped at every position of
    ``["blocks"][i]``, ``["probe_accuracy"][i]`` a logistic probe's held-out accuracy there."""
    return _result(_native.image_das(model._native, [os.fspath(p) for p in positive],
                                     [os.fspath(p) for p in negative], attribute,
                                     None if classes is None else list(classes), crops,
                                     None if blocks is None else list(blocks), pairs, epochs, seed, _out(out)))


def vad_state(model: Model, texts: Sequence[str], gap: float = 0.6, chunks: Optional[Sequence[int]] = None,
              out: Optional[PathLike] = None) -> dict:
    """Silero VAD (``vene.load("silero-vad")``) on ``texts`` synthesised by espeak-ng: the LSTM state zeroed, or
    taken from silence, at each of ``chunks`` (32 ms each; default five chunks into each stretch of speech), and the
    speech probability of every chunk against the clean run."""
    return _result(_native.vad_state(model._native, list(texts), gap, None if chunks is None else list(chunks),
                                     _out(out)))
