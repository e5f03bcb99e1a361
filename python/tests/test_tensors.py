"""Tensors cross between torch and vene without copies, keep autograd, and do not leak."""

import gc
import sys

import torch

import vene
from vene import _native


def test_a_tensor_comes_back_as_the_same_object_over_the_same_memory():
    for tensor in [
        torch.arange(12.0).view(3, 4),
        torch.arange(12.0).view(3, 4).t(),  # a strided view
        torch.zeros(2, 3, dtype=torch.bfloat16),
        torch.nn.Parameter(torch.ones(4)),
        torch.empty(5, device="meta"),
    ]:
        back, data_ptr_inside = _native.roundtrip(tensor)
        assert back is tensor
        if tensor.device.type != "meta":
            assert data_ptr_inside == tensor.data_ptr()


def test_a_view_keeps_its_base_and_an_in_place_change_is_seen_on_both_sides():
    base = torch.zeros(4, 4)
    view = base[1:3]
    back, _ = _native.roundtrip(view)
    assert back._base is base
    back.add_(1.0)
    assert base.sum().item() == 8.0


def test_collected_activations_are_fresh_tensors_each_call(gpt2):
    ids = torch.tensor([[5, 9, 2, 7]])
    config = [{"layer": 0, "component": "block_output", "intervention_type": vene.CollectIntervention}]
    intervenable = vene.IntervenableModel(config, gpt2)
    (_, first), _ = intervenable(ids, unit_locations={"base": 2})
    (_, second), _ = intervenable(ids, unit_locations={"base": 2})
    assert torch.equal(first[0], second[0])
    assert first[0].data_ptr() != second[0].data_ptr()  # fresh results, not a shared buffer


def test_trainable_parameters_are_shared_and_train_through_autograd(gpt2):
    config = [{"layer": 1, "component": "block_output",
               "intervention_type": vene.LowRankRotatedSpaceIntervention, "low_rank_dimension": 2}]
    intervenable = vene.IntervenableModel(config, gpt2)
    parameters = intervenable.parameters()
    assert parameters and all(p.requires_grad for p in parameters)
    again = intervenable.parameters()
    assert [p.data_ptr() for p in parameters] == [p.data_ptr() for p in again]

    base, source = torch.tensor([[3, 4, 5]]), torch.tensor([[60, 61, 62]])
    _, out = intervenable(base, [source], unit_locations={"sources->base": 2})
    loss = out.logits[0, -1].logsumexp(-1) - out.logits[0, -1, 7]
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in parameters)

    # One step of a torch optimizer on vene's tensors changes what vene computes.
    before = out.logits.detach().clone()
    torch.optim.SGD(parameters, lr=1.0).step()
    with torch.no_grad():
        _, after = intervenable(base, [source], unit_locations={"sources->base": 2})
    assert (after.logits - before).abs().max() > 1e-6


def test_no_grad_mode_is_shared_with_vene(gpt2):
    config = [{"layer": 1, "component": "block_output",
               "intervention_type": vene.RotatedSpaceIntervention}]
    intervenable = vene.IntervenableModel(config, gpt2)
    base, source = torch.tensor([[3, 4, 5]]), torch.tensor([[60, 61, 62]])
    _, with_grad = intervenable(base, [source], unit_locations={"sources->base": 1})
    with torch.no_grad():
        _, without = intervenable(base, [source], unit_locations={"sources->base": 1})
    assert with_grad.logits.requires_grad and not without.logits.requires_grad


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def test_a_thousand_calls_do_not_leak(gpt2):
    config = [{"layer": 1, "component": "block_output", "intervention_type": vene.VanillaIntervention},
              {"layer": 2, "component": "mlp_output", "intervention_type": vene.CollectIntervention}]
    intervenable = vene.IntervenableModel(config, gpt2)
    base = torch.randint(0, 100, (8, 12), generator=torch.Generator().manual_seed(0))
    source = torch.randint(0, 100, (8, 12), generator=torch.Generator().manual_seed(1))

    def calls(n: int) -> None:
        with torch.no_grad():
            for _ in range(n):
                intervenable(base, [source, None], unit_locations={"sources->base": 3})
                _native.roundtrip(base)

    references = sys.getrefcount(base)
    calls(200)  # allocator and caches warm up
    assert sys.getrefcount(base) == references
    gc.collect()
    before = rss_bytes()
    calls(1000)
    gc.collect()
    growth = rss_bytes() - before
    assert growth < 8 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 1,000 calls"
