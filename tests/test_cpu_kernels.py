"""The pure-torch stand-ins of flash_attn and grouped_gemm that nanotron's CPU mode runs on, against our own model
code and plain per-token arithmetic (loaded from their files: they are never put on this process's path, where
other libraries would take them for the real packages)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config

from stages.model.layers import RMSNorm, apply_rotary, rotary_cos_sin

KERNELS = Path(__file__).resolve().parents[1] / "stages" / "interop" / "cpu_kernels"


def load(relative: str):
    name = "cpu_kernels_" + relative.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, KERNELS / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


attention = load("flash_attn/flash_attn_interface.py")
rotary = load("flash_attn/layers/rotary.py")
layer_norm = load("flash_attn/ops/triton/layer_norm.py")
ops = load("grouped_gemm/ops.py")


def reference_attention(q, k, v, lengths):
    """Causal attention per sequence, heads grouped, with sdpa (our model's call)."""
    out, start = [], 0
    for n in lengths:
        qs, ks, vs = (x[start : start + n].transpose(0, 1)[None] for x in (q, k, v))
        out.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, enable_gqa=True)[0].transpose(0, 1))
        start += n
    return torch.cat(out)


@pytest.mark.parametrize("lengths", [[16, 16, 16], [5, 16, 11]])
def test_varlen_kvpacked_attention_is_causal_attention_per_sequence(lengths):
    g = torch.Generator().manual_seed(0)
    total, heads, kv_heads, dim = sum(lengths), 4, 2, 8
    q = torch.randn(total, heads, dim, generator=g)
    kv = torch.randn(total, 2, kv_heads, dim, generator=g)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    got = attention.flash_attn_varlen_kvpacked_func(q, kv, cu, cu, max(lengths), max(lengths), 0.0, causal=True)
    want = reference_attention(q, kv[:, 0], kv[:, 1], lengths)
    assert torch.allclose(got, want, atol=1e-6)
    with pytest.raises(NotImplementedError, match="dropout_p=0.1"):
        attention.flash_attn_varlen_kvpacked_func(q, kv, cu, cu, 16, 16, 0.1, causal=True)


def test_sliding_window_masks_keys_further_back_than_the_window():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 6, 1, 4, generator=g) for _ in range(3))
    got = attention.flash_attn_func(q, k, v, causal=True, window_size=(0, 0))
    assert torch.allclose(got, v)  # each position sees only itself


def test_rotary_on_packed_q_and_kv_is_our_rotary():
    cfg = tiny_config(n_head=4, d_model=32)
    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 12, 4, cfg.head_dim, generator=g)
    kv = torch.randn(2, 12, 2, 4, cfg.head_dim, generator=g)
    emb = rotary.RotaryEmbedding(cfg.head_dim, base=cfg.rope_theta)
    q_rot, kv_rot = emb(q, kv, seqlen_offset=0, max_seqlen=12)
    cos, sin = rotary_cos_sin(cfg, 12, torch.device("cpu"))
    ours = lambda x: apply_rotary(x.transpose(1, 2), cos, sin).transpose(1, 2)  # noqa: E731  (B, H, T, hd)
    assert torch.allclose(q_rot, ours(q), atol=1e-6)
    assert torch.allclose(kv_rot[:, :, 0], ours(kv[:, :, 0]), atol=1e-6)
    assert torch.equal(kv_rot[:, :, 1], kv[:, :, 1])  # values are not rotated


def test_rms_layer_norm_fn_is_our_rmsnorm_and_adds_the_residual_first():
    g = torch.Generator().manual_seed(3)
    x, residual = torch.randn(5, 16, generator=g), torch.randn(5, 16, generator=g)
    norm = RMSNorm(16, 1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(16, generator=g) + 0.5)
    got = layer_norm.layer_norm_fn(x, norm.weight, None, eps=1e-6, is_rms_norm=True)
    assert torch.allclose(got, norm(x), atol=1e-6)
    out, stream = layer_norm.layer_norm_fn(x, norm.weight, None, residual=residual, eps=1e-6, prenorm=True,
                                           is_rms_norm=True)  # fmt: skip
    assert torch.allclose(stream, x + residual) and torch.allclose(out, norm(x + residual), atol=1e-6)


def test_grouped_gemm_permute_gmm_unpermute_is_the_per_token_mixture_with_gradients():
    g = torch.Generator().manual_seed(4)
    tokens, hidden, experts, k, width = 10, 6, 3, 2, 5
    x = torch.randn(tokens, hidden, generator=g, requires_grad=True)
    w = torch.randn(experts, hidden, width, generator=g, requires_grad=True)
    indices = torch.stack([torch.randperm(experts, generator=g)[:k] for _ in range(tokens)]).to(torch.int32)
    probs = torch.rand(tokens, k, generator=g, requires_grad=True)
    rows, row_map = ops.permute(x, indices)
    counts = torch.bincount(indices.flatten().long(), minlength=experts)
    got = ops.unpermute(ops.gmm(rows, w, counts), row_map, probs)
    want = torch.stack([sum(probs[t, j] * (x[t] @ w[indices[t, j]]) for j in range(k)) for t in range(tokens)])
    assert torch.allclose(got, want, atol=1e-5)
    grads = torch.autograd.grad(got.sum(), (x, w, probs))
    grads_want = torch.autograd.grad(want.sum(), (x, w, probs))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, grads_want, strict=True))
    assert torch.allclose(ops.gmm(rows, w.transpose(1, 2), counts, trans_b=True), ops.gmm(rows, w, counts))
