"""Our MoE science inside nanotron's Qwen2: the model class the nanotron backend hands to its trainer.

nanotron main's Qwen2 MoE layer routes softmax-then-top-k without renormalisation and has neither a
load-balancing loss nor a router z-loss (``router_aux_loss_coef`` is read by nothing). The class built by
:func:`model_class` keeps nanotron's modules and parameters, so its checkpoints, parallel layout and weight
loading are untouched, and changes two things: every MoE layer runs :func:`stages.model.moe.mixture`, the routed
layer our torch backend runs (renormalised or plain top-k, capacity and drops, the Switch balancing loss and the
z-loss of the router, router statistics), and the loss is the LM loss plus the weighted router losses, each the
mean over MoE layers, as in our trainer. Each micro batch also returns ``stats``: the vector of
:meth:`stages.training.loop.StepStats.totals`, which the trainer sums over passes and processes into the same
metrics row the torch backend logs. Runs inside the nanotron environment (it imports nanotron).

Pipeline parallelism is not supported here (the router losses would live on other stages than the LM loss);
the backend writes ``pp: 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from nanotron.models.qwen import Qwen2DecoderLayer, Qwen2ForTraining
from nanotron.nn.moe import Qwen2MoELayer

from stages.model.moe import mixture
from stages.model.transformer import Output
from stages.training.loop import StepStats


@dataclass(frozen=True)
class Routing:
    """The MoE options nanotron's config cannot carry."""

    top_k: int
    norm_topk_prob: bool
    capacity_factor: float
    aux_loss_coef: float
    z_loss_coef: float


class RoutedMoELayer(Qwen2MoELayer):
    """nanotron's MoE layer (same parameters) computing our routed layer; keeps its last losses and statistics."""

    routing: Routing

    def _core_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        mix = mixture(
            hidden_states,
            self.router.weight,
            self.experts.merged_gate_up_proj.transpose(1, 2),  # x @ W layout [E, d, 2F] -> [E, 2F, d]
            self.experts.merged_down_proj.transpose(1, 2),  # [E, F, d] -> [E, d, F]
            self.routing.top_k,
            self.routing.norm_topk_prob,
            self.routing.capacity_factor,
        )
        out = mix.out
        if self.enable_shared_expert:
            shared = self.shared_expert(hidden_states=hidden_states)["hidden_states"]
            out = out + torch.sigmoid(self.shared_expert_gate(hidden_states)) * shared
        self.last = mix
        return out


def model_class(routing: Routing | None) -> type[Qwen2ForTraining]:
    """A ``Qwen2ForTraining`` whose MoE layers route with ``routing`` and whose loss adds the router losses."""

    class RoutedDecoderLayer(Qwen2DecoderLayer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if isinstance(self.mlp, Qwen2MoELayer):
                assert routing is not None, "an MoE layer needs the routing options"
                self.mlp.__class__ = RoutedMoELayer
                self.mlp.routing = routing

    class RoutedQwen2ForTraining(Qwen2ForTraining):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            for block in self.model.decoder:  # built later by nanotron's build_model, from this builder
                block.module_builder = RoutedDecoderLayer

        def moe_layers(self) -> list[RoutedMoELayer]:
            return [m for m in self.modules() if isinstance(m, RoutedMoELayer)]

        def forward(self, input_ids, position_ids, label_ids, label_mask) -> dict[str, torch.Tensor]:
            sharded_logits = self.model(input_ids=input_ids, position_ids=position_ids)
            ce = self.loss(sharded_logits=sharded_logits, label_ids=label_ids, label_mask=label_mask)["loss"]
            layers = self.moe_layers()
            zero = ce.new_zeros((), dtype=torch.float32)
            aux = torch.stack([m.last.aux_loss for m in layers]).mean() if layers else zero
            z = torch.stack([m.last.z_loss for m in layers]).mean() if layers else zero
            loss = ce
            if routing is not None:
                loss = ce + routing.aux_loss_coef * aux + routing.z_loss_coef * z
            out = Output(sharded_logits, aux, z, [m.last.stats for m in layers])
            return {"loss": loss, "stats": StepStats.of_pass(loss, ce, out).totals().detach()}

    return RoutedQwen2ForTraining
