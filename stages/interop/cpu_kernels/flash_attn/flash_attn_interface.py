"""Attention over packed variable-length sequences, as ``flash_attn.flash_attn_interface`` computes it.

Tensors are ``[total_tokens, heads, head_dim]``; sequence ``i`` is rows ``cu_seqlens[i]:cu_seqlens[i + 1]``.
Grouped KV heads are shared by ``heads // kv_heads`` query heads; ``causal`` aligns the mask to the bottom
right (flash-attn >= 2.1); ``window_size = (left, right)`` with -1 for unbounded. Computed in fp32 with
``scaled_dot_product_attention`` and returned in the input dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _unsupported(what: str) -> NotImplementedError:
    return NotImplementedError(f"{what}: not available in the CPU stand-in of flash_attn (nanotron CPU mode)")


def _check(dropout_p: float, softcap: float, alibi_slopes: object, return_attn_probs: bool) -> None:
    if dropout_p:
        raise _unsupported(f"dropout_p={dropout_p}")
    if softcap:
        raise _unsupported(f"softcap={softcap}")
    if alibi_slopes is not None:
        raise _unsupported("alibi_slopes")
    if return_attn_probs:
        raise _unsupported("return_attn_probs")


def _mask(len_q: int, len_k: int, causal: bool, window: tuple[int, int], device: torch.device) -> torch.Tensor | None:
    """Boolean [len_q, len_k] mask of allowed positions (None: everything allowed)."""
    left, right = window
    if causal:
        right = 0
    if left < 0 and right < 0:
        return None
    q = torch.arange(len_q, device=device)[:, None] + (len_k - len_q)  # bottom-right alignment
    k = torch.arange(len_k, device=device)[None, :]
    allowed = torch.ones(len_q, len_k, dtype=torch.bool, device=device)
    if right >= 0:
        allowed &= k <= q + right
    if left >= 0:
        allowed &= k >= q - left
    return allowed


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool, window: tuple[int, int]
) -> torch.Tensor:
    """q [b, s, h, d], k/v [b, t, hk, d] -> [b, s, h, d]."""
    qf, kf, vf = (x.float().transpose(1, 2) for x in (q, k, v))
    groups = q.shape[2] // k.shape[2]
    if groups > 1:
        kf, vf = kf.repeat_interleave(groups, dim=1), vf.repeat_interleave(groups, dim=1)
    mask = _mask(q.shape[1], k.shape[1], causal, window, q.device)
    out = F.scaled_dot_product_attention(qf, kf, vf, attn_mask=mask, scale=scale)
    return out.transpose(1, 2).to(q.dtype)


def flash_attn_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
) -> torch.Tensor:
    """Batched attention: q [b, s, h, d], k/v [b, t, hk, d]."""
    _check(dropout_p, softcap, alibi_slopes, return_attn_probs)
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    return _attend(q, k, v, scale, causal, tuple(window_size))


def flash_attn_varlen_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    block_table: torch.Tensor | None = None,
) -> torch.Tensor:
    """Packed attention: q [total_q, h, d], k/v [total_k, hk, d]; one sequence per cu_seqlens interval."""
    _check(dropout_p, softcap, alibi_slopes, return_attn_probs)
    if block_table is not None:
        raise _unsupported("block_table (paged KV cache)")
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    window = tuple(window_size)
    starts_q, starts_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    lens_q = {b - a for a, b in zip(starts_q, starts_q[1:], strict=False)}
    lens_k = {b - a for a, b in zip(starts_k, starts_k[1:], strict=False)}
    n = len(starts_q) - 1
    if len(lens_q) == 1 and len(lens_k) == 1 and starts_q[-1] == q.shape[0] and starts_k[-1] == k.shape[0]:
        (lq,), (lk,) = lens_q, lens_k  # equal lengths: one batched call
        out = _attend(
            q.view(n, lq, *q.shape[1:]), k.view(n, lk, *k.shape[1:]), v.view(n, lk, *v.shape[1:]), scale, causal, window
        )
        return out.reshape(q.shape)
    out = q.new_zeros(q.shape)
    for i in range(n):
        qs, ks = slice(starts_q[i], starts_q[i + 1]), slice(starts_k[i], starts_k[i + 1])
        out[qs] = _attend(q[None, qs], k[None, ks], v[None, ks], scale, causal, window)[0]
    return out


def flash_attn_varlen_kvpacked_func(
    q: torch.Tensor,
    kv: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
) -> torch.Tensor:
    """As :func:`flash_attn_varlen_func` with keys and values packed: kv [total_k, 2, hk, d]."""
    return flash_attn_varlen_func(
        q,
        kv[:, 0],
        kv[:, 1],
        cu_seqlens_q,
        cu_seqlens_k,
        max_seqlen_q,
        max_seqlen_k,
        dropout_p,
        softmax_scale,
        causal,
        window_size,
        softcap,
        alibi_slopes,
        deterministic,
        return_attn_probs,
    )


def flash_attn_with_kvcache(*args: object, **kwargs: object) -> torch.Tensor:
    raise _unsupported("flash_attn_with_kvcache (decoding with a KV cache)")


def _flash_attn_varlen_forward(*args: object, **kwargs: object) -> torch.Tensor:
    raise _unsupported("_flash_attn_varlen_forward (ring attention / context parallelism)")


def _flash_attn_varlen_backward(*args: object, **kwargs: object) -> torch.Tensor:
    raise _unsupported("_flash_attn_varlen_backward (ring attention / context parallelism)")
