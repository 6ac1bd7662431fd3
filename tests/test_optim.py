"""Our AdamW is torch's AdamW (single-tensor path), bit for bit, and its state round-trips."""

from __future__ import annotations

import torch

from stages.training.optimizer import AdamW


def test_matches_torch_adamw_exactly():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(5))]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    ours = AdamW(
        [{"params": params[:1], "weight_decay": 0.1}, {"params": params[1:], "weight_decay": 0.0}],
        lr=0.01,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    ref = torch.optim.AdamW(
        [{"params": twins[:1], "weight_decay": 0.1}, {"params": twins[1:], "weight_decay": 0.0}],
        lr=0.01,
        betas=(0.9, 0.95),
        eps=1e-8,
        foreach=False,
    )
    for step in range(20):
        lr = 0.01 * (1 + step) / 20
        for group in ours.param_groups + ref.param_groups:
            group["lr"] = lr
        for ps in (params, twins):
            loss = (ps[0].sum(1) * ps[1]).pow(2).sum()
            loss.backward()
        ours.step()
        ref.step()
        ours.zero_grad()
        ref.zero_grad()
    for a, b in zip(params, twins, strict=True):
        assert torch.equal(a, b)


def test_state_round_trip_continues_identically():
    def run(split: bool) -> torch.Tensor:
        p = torch.nn.Parameter(torch.ones(4))
        opt = AdamW([{"params": [p], "weight_decay": 0.1}], lr=0.1)
        for i in range(6):
            if split and i == 3:
                state = opt.state_dict()
                opt = AdamW([{"params": [p], "weight_decay": 0.1}], lr=0.1)
                opt.load_state_dict(state)
            (p * torch.arange(4.0)).pow(2).sum().backward()
            opt.step()
            opt.zero_grad()
        return p.detach()

    assert torch.equal(run(False), run(True))
