"""The fused cross-entropy (stages/model/loss.py): F.cross_entropy's values and gradients to fp32 rounding, same
bytes for the same inputs, and the trainer's entry point (stages.model.transformer.cross_entropy) uses it."""

from __future__ import annotations

import weakref

import pytest
import torch
import torch.nn.functional as F

from stages.model.loss import cross_entropy
from stages.model.transformer import cross_entropy as model_cross_entropy


def case(scale: float, tokens: int = 300, vocab: int = 257, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(tokens, vocab, generator=gen) * scale, torch.randint(0, vocab, (tokens,), generator=gen)


def value_and_grad(fn, logits: torch.Tensor, targets: torch.Tensor, weight: float = 1.0):
    x = logits.clone().requires_grad_(True)
    loss = fn(x, targets)
    (loss * weight if weight != 1.0 else loss).backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("scale", [0.02, 1.0, 8.0, 60.0])  # 60: most target probabilities underflow to 0 in fp32
@pytest.mark.parametrize("weight", [1.0, 0.37])  # 1: the training loss (no backward pass); else a scaled loss
def test_matches_f_cross_entropy_to_fp32_rounding(scale, weight):
    logits, targets = case(scale)
    exact, exact_grad = value_and_grad(F.cross_entropy, logits.double(), targets, weight)
    ours, grad = value_and_grad(cross_entropy, logits, targets, weight)
    ref, ref_grad = value_and_grad(F.cross_entropy, logits, targets, weight)
    assert ours.dtype == grad.dtype == torch.float32
    # no further from the fp64 truth than torch's own fp32 result, give or take a few units in the last place
    eps = torch.finfo(torch.float32).eps
    assert abs(float(ours) - float(exact)) <= 2 * abs(float(ref) - float(exact)) + 4 * eps * float(exact)
    grad_err = float((grad.double() - exact_grad).abs().max())
    ref_err = float((ref_grad.double() - exact_grad).abs().max())
    assert grad_err <= 2 * ref_err + 4 * eps * float(exact_grad.abs().max())
    torch.testing.assert_close(ours, ref, rtol=2e-6, atol=0.0)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6 * float(ref_grad.abs().max()))


def test_float64_matches_exactly_enough_for_finite_differences():
    logits, targets = case(3.0, tokens=40, vocab=19)
    ours, grad = value_and_grad(cross_entropy, logits.double(), targets)
    ref, ref_grad = value_and_grad(F.cross_entropy, logits.double(), targets)
    assert grad.dtype == torch.float64
    torch.testing.assert_close(ours, ref, rtol=1e-13, atol=0.0)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-15)


def test_same_inputs_give_the_same_bytes():
    logits, targets = case(2.0, tokens=512, vocab=2048, seed=3)
    (a, ga), (b, gb) = (value_and_grad(cross_entropy, logits, targets) for _ in range(2))
    assert a.numpy().tobytes() == b.numpy().tobytes()
    assert ga.numpy().tobytes() == gb.numpy().tobytes()


def test_retained_graph_accumulates_like_f_cross_entropy():
    logits, targets = case(1.0, tokens=64, vocab=33)
    grads = []
    for fn in (cross_entropy, F.cross_entropy):
        x = logits.clone().requires_grad_(True)
        loss = fn(x, targets)
        loss.backward(retain_graph=True)
        loss.backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-9)


def test_the_models_loss_uses_it_on_batched_and_bf16_logits():
    logits, targets = case(1.5, tokens=4 * 16, vocab=97)
    batched, batched_targets = logits.view(4, 16, 97), targets.view(4, 16)
    ours, grad = value_and_grad(model_cross_entropy, batched, batched_targets)
    ref, ref_grad = value_and_grad(F.cross_entropy, logits, targets)
    torch.testing.assert_close(ours, ref, rtol=2e-6, atol=0.0)
    torch.testing.assert_close(grad.view(-1, 97), ref_grad, rtol=1e-5, atol=1e-9)
    half, half_grad = value_and_grad(model_cross_entropy, batched.bfloat16(), batched_targets)
    assert half.dtype == torch.float32 and half_grad.dtype == torch.bfloat16  # computed in fp32, cast back
    ref_half = F.cross_entropy(batched.bfloat16().float().view(-1, 97), targets)
    torch.testing.assert_close(half, ref_half, rtol=2e-6, atol=0.0)


def test_without_gradients_only_the_value_is_computed():
    logits, targets = case(1.0)
    with torch.no_grad():
        ours = cross_entropy(logits, targets)
    torch.testing.assert_close(ours, F.cross_entropy(logits, targets), rtol=2e-6, atol=0.0)


def test_the_gradient_buffer_is_released_by_the_backward():
    """A [tokens, vocab] buffer that outlived the backward would sit beside the next step's logits (GPU memory)."""
    logits, targets = case(1.0)
    kept = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept.append(weakref.ref(t))
        return t

    x = logits.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = cross_entropy(x * 1.0, targets)  # not a leaf: the gradient flows on, as into the LM head
    loss.backward()
    assert kept and all(ref() is None for ref in kept)
    assert loss.grad_fn is not None  # the graph is still referenced, its saved gradient is not
