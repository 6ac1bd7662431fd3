"""Rotary position embeddings as ``flash_attn.layers.rotary`` applies them (the rotate-half or interleaved layout).

``cos`` and ``sin`` are ``[positions, rotary_dim / 2]``; the first ``rotary_dim`` features of each head are
rotated, the rest pass through. Computed in fp32, returned in the input dtype, out of place.
"""

from __future__ import annotations

import torch
from torch import nn


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """x [..., s, h, d] with cos/sin [..., s, rd/2] already aligned to x's positions."""
    rd = 2 * cos.shape[-1]
    xf, rest = x[..., :rd].float(), x[..., rd:]
    c, s = cos.float().unsqueeze(-2), sin.float().unsqueeze(-2)  # broadcast over heads
    if interleaved:
        x1, x2 = xf[..., 0::2], xf[..., 1::2]
        out = torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2)
    else:
        x1, x2 = xf[..., : rd // 2], xf[..., rd // 2 :]
        out = torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)
    return torch.cat((out.to(x.dtype), rest), dim=-1)


def apply_rotary_emb(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    interleaved: bool = False,
    inplace: bool = False,
    seqlen_offsets: int | torch.Tensor = 0,
    cu_seqlens: torch.Tensor | None = None,
    max_seqlen: int | None = None,
) -> torch.Tensor:
    """Rotate x [b, s, h, d] (or [total, h, d] with ``cu_seqlens``) by positions offset by ``seqlen_offsets``."""
    if cu_seqlens is not None:
        starts = cu_seqlens.tolist()
        pieces = []
        for i in range(len(starts) - 1):
            offset = seqlen_offsets if isinstance(seqlen_offsets, int) else int(seqlen_offsets[i])
            pos = torch.arange(starts[i + 1] - starts[i], device=x.device) + offset
            pieces.append(_rotate(x[starts[i] : starts[i + 1]], cos[pos], sin[pos], interleaved))
        out = torch.cat(pieces)
    else:
        pos = torch.arange(x.shape[1], device=x.device)
        if isinstance(seqlen_offsets, int):
            out = _rotate(x, cos[pos + seqlen_offsets], sin[pos + seqlen_offsets], interleaved)
        else:
            index = pos[None, :] + seqlen_offsets.to(x.device)[:, None]  # [b, s]
            out = _rotate(x, cos[index], sin[index], interleaved)
    if inplace:
        x.copy_(out)
        return x
    return out


class RotaryEmbedding(nn.Module):
    """Cached cos/sin tables and their application to packed q/k/v (flash_attn's ``RotaryEmbedding`` API)."""

    def __init__(
        self,
        dim: int,
        base: float = 10000.0,
        interleaved: bool = False,
        scale_base: float | None = None,
        pos_idx_in_fp32: bool = True,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.base = float(base)
        self.pos_idx_in_fp32 = pos_idx_in_fp32
        self.register_buffer("inv_freq", self._compute_inv_freq(device), persistent=False)
        self.interleaved = interleaved
        self.scale_base = scale_base
        scale = None
        if scale_base is not None:
            scale = (torch.arange(0, dim, 2, device=device, dtype=torch.float32) + 0.4 * dim) / (1.4 * dim)
        self.register_buffer("scale", scale, persistent=False)
        self._seq_len_cached = 0
        self._cos_cached: torch.Tensor | None = None
        self._sin_cached: torch.Tensor | None = None
        self._cos_k_cached: torch.Tensor | None = None
        self._sin_k_cached: torch.Tensor | None = None

    def _compute_inv_freq(self, device: torch.device | None = None) -> torch.Tensor:
        return 1.0 / (self.base ** (torch.arange(0, self.dim, 2, device=device, dtype=torch.float32) / self.dim))

    def _update_cos_sin_cache(self, seqlen: int, device: torch.device | None = None, dtype: torch.dtype | None = None):
        if (
            seqlen > self._seq_len_cached
            or self._cos_cached is None
            or self._cos_cached.device != device
            or self._cos_cached.dtype != dtype
        ):
            self._seq_len_cached = seqlen
            t = torch.arange(seqlen, device=device, dtype=torch.float32)
            freqs = torch.outer(t, self._compute_inv_freq(device))
            if self.scale is None:
                self._cos_cached, self._sin_cached = torch.cos(freqs).to(dtype), torch.sin(freqs).to(dtype)
            else:
                power = (torch.arange(seqlen, dtype=torch.float32, device=device) - seqlen // 2) / self.scale_base
                scale = self.scale.to(device=device) ** power[:, None]
                self._cos_cached = (torch.cos(freqs) * scale).to(dtype)
                self._sin_cached = (torch.sin(freqs) * scale).to(dtype)
                self._cos_k_cached = (torch.cos(freqs) / scale).to(dtype)
                self._sin_k_cached = (torch.sin(freqs) / scale).to(dtype)

    def forward(
        self,
        qkv: torch.Tensor,
        kv: torch.Tensor | None = None,
        seqlen_offset: int | torch.Tensor = 0,
        max_seqlen: int | None = None,
        num_heads_q: int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """qkv [b, s, 3, h, d] -> rotated qkv; or q [b, s, h, d] and kv [b, s, 2, hk, d] -> (q, kv) rotated."""
        if num_heads_q is not None:
            raise NotImplementedError("num_heads_q (qkv packed along heads): not in the CPU stand-in of flash_attn")
        seqlen = qkv.shape[1]
        if max_seqlen is not None:
            self._update_cos_sin_cache(max_seqlen, device=qkv.device, dtype=qkv.dtype)
        elif isinstance(seqlen_offset, int):
            self._update_cos_sin_cache(seqlen + seqlen_offset, device=qkv.device, dtype=qkv.dtype)
        cos, sin = self._cos_cached, self._sin_cached
        cos_k = cos if self.scale is None else self._cos_k_cached
        sin_k = sin if self.scale is None else self._sin_k_cached
        rotate = lambda x, c, s: apply_rotary_emb(x, c, s, self.interleaved, seqlen_offsets=seqlen_offset)  # noqa: E731
        if kv is None:
            q = rotate(qkv[:, :, 0], cos, sin)
            k = rotate(qkv[:, :, 1], cos_k, sin_k)
            return torch.stack((q, k, qkv[:, :, 2]), dim=2)
        q = rotate(qkv, cos, sin)
        k = rotate(kv[:, :, 0], cos_k, sin_k)
        return q, torch.stack((k, kv[:, :, 1]), dim=2)
