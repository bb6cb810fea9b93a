"""Hybrid: the WAM proposes, action-conditioned simulation checks, a local optimiser refines.

1. WAM mode proposes `proposals` action chunks for the instruction (`wm.propose`).
2. Each chunk is re-simulated under its own actions in AC mode (`wm.rollout`) and scored by the objective.
3. The best is refined: by CEM initialised at the mean / std of the `top_k` proposals, or by gradient steps
   through the AC rollout from the `top_k` proposals.
4. The refined plan is kept only if it scores higher than the best proposal. All evaluations of one plan
   share the model's flow noise, so this comparison is exact and the result is never worse than the best
   proposal (under that noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flexwm.config import field
from flexwm.errors import ConfigError
from flexwm.models.interface import WorldModel
from flexwm.planning.base import Plan, WMPlanner, to_numpy
from flexwm.planning.gradient import adam_ascent
from flexwm.planning.objectives import Objective, ObjectiveConfig, rollout_and_score, rollout_noise
from flexwm.planning.sampling import cem_update, optimise_sampling


@dataclass
class HybridConfig:
    execute: int | None = field(None, ge=1, help="actions executed before replanning; None = frame_stride")
    proposals: int = field(8, ge=1, help="WAM proposals per plan")
    top_k: int = field(4, ge=1, help="proposals that initialise the refinement")
    refine: str = field("cem", choices=("cem", "grad", "none"))
    iterations: int = field(3, ge=1, help="CEM iterations or gradient steps")
    population: int = field(32, ge=2, help="CEM candidates per iteration")
    elites: int = field(4, ge=1, help="CEM elites")
    momentum: float = field(0.1, ge=0.0, le=1.0, help="CEM momentum")
    min_std: float = field(0.05, ge=0.0, help="CEM std floor, in half action ranges")
    lr: float = field(0.05, ge=0.0, help="gradient refinement: Adam step in normalised action units")
    flow_steps: int | None = field(None, ge=1, help="flow-sampling steps; None = the model's")
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    agreement_weight: float = field(0.0, ge=0.0, help="add this times the agreement of each proposal's own "
                                                      "imagined video with the AC rollout of its actions (minus "
                                                      "their mean squared latent distance): a check no learned "
                                                      "head makes; needs refine=none")

    def __post_init__(self) -> None:
        if self.agreement_weight > 0 and self.refine != "none":
            raise ConfigError("config key 'agreement_weight' scores WAM proposals against their own video; refined "
                              f"plans have none, so it needs refine=none (got refine={self.refine!r})")
        if self.top_k > self.proposals:
            raise ConfigError(f"config key 'top_k' = {self.top_k} must be <= 'proposals' = {self.proposals}")
        if self.elites > self.population:
            raise ConfigError(f"config key 'elites' = {self.elites} must be <= 'population' = {self.population}")


class HybridPlanner(WMPlanner):
    name = "hybrid"

    def __init__(self, wm: WorldModel, cfg: HybridConfig, objective: Objective, low: np.ndarray, high: np.ndarray):
        super().__init__(wm, chunks=1)
        self.cfg, self.objective = cfg, objective
        self.low, self.high = np.asarray(low, np.float32), np.asarray(high, np.float32)

    def _plan(self, frames: np.ndarray, proprio: np.ndarray | None, instruction: str,
              generator: torch.Generator, executed: int) -> Plan:
        cfg, state = self.cfg, self.encode(frames, proprio)
        like = state.context
        low, high = torch.as_tensor(self.low).to(like), torch.as_tensor(self.high).to(like)
        half = (high - low) / 2
        noise = rollout_noise(self.wm, state, self.horizon, generator)

        def evaluate(actions: Tensor) -> tuple[Tensor, Tensor]:
            return rollout_and_score(self.wm, state, actions, self.objective, instruction, generator, noise,
                                     steps=cfg.flow_steps)

        with torch.no_grad():
            proposals, video = self.wm.propose(state, instruction or None, cfg.proposals, generator=generator,
                                               steps=cfg.flow_steps)
            proposals = proposals[0].clamp(low, high)
            values, latents = evaluate(proposals)
            if cfg.agreement_weight > 0:  # does the AC side imagine what the WAM imagined for these actions?
                frames = min(latents.shape[1], video.shape[2])
                gap = (latents[:, :frames].float() - video[0, :, :frames].float()).pow(2).flatten(1).mean(1)
                values = values + cfg.agreement_weight * -gap.to(values)
        values = torch.nan_to_num(values.float(), nan=-float("inf"))
        order = values.argsort(descending=True)
        b = int(order[0])
        best = {"actions": proposals[b], "value": float(values[b]), "latents": latents[b], "source": "proposal"}
        top = proposals[order[: cfg.top_k]]
        refined = self._refine(evaluate, top, low, high, half, generator)
        if refined is not None and refined["value"] > best["value"]:
            best = {**refined, "source": f"refined ({cfg.refine})"}
        return Plan(actions=to_numpy(best["actions"]), latents=best["latents"].detach().cpu(), score=best["value"],
                    info={"proposal_values": values.cpu().tolist(), "chosen": best["source"],
                          "refined_value": None if refined is None else refined["value"]})

    def _refine(self, evaluate: Any, top: Tensor, low: Tensor, high: Tensor, half: Tensor,
                generator: torch.Generator) -> dict[str, Any] | None:
        cfg = self.cfg
        if cfg.refine == "none":
            return None
        if cfg.refine == "cem":
            std = torch.maximum(top.std(0, unbiased=False), cfg.min_std * half) if len(top) > 1 else \
                (cfg.min_std * half).expand_as(top[0]).clone()

            def update(e: Tensor, v: Tensor, m: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
                return cem_update(e, v, m, s, momentum=cfg.momentum, min_std=cfg.min_std * half)

            with torch.no_grad():
                out = optimise_sampling(evaluate, top.mean(0), std, low, high, population=cfg.population,
                                        iterations=cfg.iterations, elites=cfg.elites, update=update,
                                        generator=generator)
                value, latents = evaluate(out["mean"][None])
            cands = [(float(value[0]), out["mean"], latents[0]), (out["best"]["value"], out["best"].get("actions"),
                                                                  out["best"].get("latents"))]
            v, a, lat = max(cands, key=lambda c: c[0])
            return {"actions": a, "value": v, "latents": lat}
        centre = (low + high) / 2
        out = adam_ascent(lambda u: evaluate(centre + half * u), (top - centre) / half, iterations=cfg.iterations,
                          lr=cfg.lr, project=lambda u: u.clamp_(-1, 1))
        k = int(out["values"].argmax())
        return {"actions": centre + half * out["x"][k], "value": float(out["values"][k]),
                "latents": out["latents"][k]}
