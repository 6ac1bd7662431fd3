"""Grouped matmul and the token permutation around it, as nanotron's MoE layer uses ``grouped_gemm.ops``.

``permute(x [T, H], indices [T, k])`` orders the T*k (token, expert) assignments by expert (stable: token order
within an expert) and returns the rows and a map from assignment ``t * k + j`` to its row;
``gmm(a, b, batch_sizes)`` multiplies consecutive row groups of ``a`` by ``b[e]`` (``b[e].T`` with ``trans_b``);
``unpermute(rows, map, probs [T, k])`` sums each token's k rows weighted by its probabilities. Differentiable.
"""

from __future__ import annotations

import torch


def permute(
    input_act: torch.Tensor, indices: torch.Tensor, num_out_tokens: int | None = None, max_token_num: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    if num_out_tokens not in (None, 0, indices.numel()):
        raise NotImplementedError("permute with dropped tokens (num_out_tokens): not in the CPU stand-in")
    top_k = indices.shape[1] if indices.dim() > 1 else 1
    order = torch.argsort(indices.reshape(-1).long(), stable=True)
    row_id_map = torch.empty_like(order)
    row_id_map[order] = torch.arange(order.numel(), device=order.device)
    return input_act[order // top_k], row_id_map.to(torch.int32)


def unpermute(input_act: torch.Tensor, row_id_map: torch.Tensor, probs: torch.Tensor | None = None) -> torch.Tensor:
    rows = input_act[row_id_map.long()]
    top_k = 1 if probs is None or probs.dim() == 1 else probs.shape[1]
    rows = rows.view(-1, top_k, input_act.shape[-1])
    if probs is not None:
        rows = rows * probs.reshape(rows.shape[0], top_k, 1).to(rows.dtype)
    return rows.sum(dim=1)


def gmm(a: torch.Tensor, b: torch.Tensor, batch_sizes: torch.Tensor, trans_b: bool = False) -> torch.Tensor:
    pieces, start = [], 0
    for e, n in enumerate(batch_sizes.tolist()):
        w = b[e].transpose(0, 1) if trans_b else b[e]
        pieces.append(a[start : start + n] @ w)
        start += n
    return torch.cat(pieces) if pieces else a.new_zeros(0, b.shape[-2] if trans_b else b.shape[-1])
