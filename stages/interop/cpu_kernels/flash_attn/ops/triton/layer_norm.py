"""``layer_norm_fn`` of ``flash_attn.ops.triton.layer_norm``: an optional residual add, then LayerNorm or RMSNorm.

The residual is added first (kept in fp32 with ``residual_in_fp32``); normalisation and the affine map run in
fp32 and the result is cast back to the input dtype. ``prenorm`` also returns the summed residual stream.
"""

from __future__ import annotations

import torch


def layer_norm_fn(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None = None,
    x1: torch.Tensor | None = None,
    weight1: torch.Tensor | None = None,
    bias1: torch.Tensor | None = None,
    eps: float = 1e-6,
    dropout_p: float = 0.0,
    rowscale: torch.Tensor | None = None,
    prenorm: bool = False,
    residual_in_fp32: bool = False,
    is_rms_norm: bool = False,
    return_dropout_mask: bool = False,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    if dropout_p or x1 is not None or weight1 is not None or rowscale is not None or return_dropout_mask:
        raise NotImplementedError("layer_norm_fn: dropout, x1/weight1 and rowscale are not in the CPU stand-in")
    dtype = out_dtype or x.dtype
    stream = x.float() if residual is None else x.float() + residual.float()
    if is_rms_norm:
        normed = stream * torch.rsqrt(stream.pow(2).mean(-1, keepdim=True) + eps)
    else:
        mean = stream.mean(-1, keepdim=True)
        normed = (stream - mean) * torch.rsqrt((stream - mean).pow(2).mean(-1, keepdim=True) + eps)
    out = normed * weight.float()
    if bias is not None:
        out = out + bias.float()
    out = out.to(dtype)
    if not prenorm:
        return out
    return out, stream if residual_in_fp32 else stream.to(x.dtype)
