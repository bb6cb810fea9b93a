"""Best-of-N: sample N joint (frames, actions) plans in WAM mode, score them, execute the best.

Candidates differ in their noise seed and in the instruction they are generated under: candidate i uses
`instructions[i % len(instructions)]`, where the list is the observation's instruction followed by the
`paraphrases` given to the planner (e.g. the task's *train* paraphrases; none by default, so the planner
knows only what the observation says). Every candidate is scored under the observation's instruction, by
the objective (success / value head by default) on its generated frames, or, with `resimulate=True`, on
the frames the model imagines when its actions are re-simulated in action-conditioned mode (catching
proposals whose actions do not produce their frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from flexwm.config import field
from flexwm.models.interface import WorldModel
from flexwm.planning.base import Plan, WMPlanner, to_numpy
from flexwm.planning.objectives import Objective, ObjectiveConfig, rollout_and_score, rollout_noise


@dataclass
class BestOfNConfig:
    execute: int | None = field(None, ge=1, help="actions executed before replanning; None = frame_stride")
    n: int = field(8, ge=1, help="candidates per plan")
    resimulate: bool = field(False, help="score each candidate's actions re-simulated in AC mode")
    common_noise: bool = field(True, help="re-simulations share the model's flow noise")
    flow_steps: int | None = field(None, ge=1, help="flow-sampling steps; None = the model's")
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)


class BestOfNPlanner(WMPlanner):
    name = "best-of-n"

    def __init__(self, wm: WorldModel, cfg: BestOfNConfig, objective: Objective, low: np.ndarray, high: np.ndarray,
                 paraphrases: list[str] | None = None):
        super().__init__(wm, chunks=1)
        self.cfg, self.objective = cfg, objective
        self.low, self.high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        self.paraphrases = [p for p in (paraphrases or []) if p]

    def instructions(self, instruction: str) -> list[str]:
        """The instruction of each candidate."""
        pool = [instruction, *[p for p in self.paraphrases if p != instruction]]
        return [pool[i % len(pool)] for i in range(self.cfg.n)]

    def _plan(self, frames: np.ndarray, proprio: np.ndarray | None, instruction: str,
              generator: torch.Generator, executed: int) -> Plan:
        cfg, state = self.cfg, self.encode(frames, proprio)
        per_candidate = self.instructions(instruction)
        with torch.no_grad():
            actions, video = [], []
            for instr in dict.fromkeys(per_candidate):  # one batched proposal per distinct instruction
                a, v = self.wm.propose(state, instr or None, per_candidate.count(instr), generator=generator,
                                       steps=cfg.flow_steps)
                actions.append(a[0])
                video.append(v[0])
            order = [i for instr in dict.fromkeys(per_candidate) for i, x in enumerate(per_candidate) if x == instr]
            actions = torch.cat(actions)[np.argsort(order)]
            video = torch.cat(video)[np.argsort(order)]
            low, high = torch.as_tensor(self.low).to(actions), torch.as_tensor(self.high).to(actions)
            actions = actions.clamp(low, high)
            if cfg.resimulate:
                noise = rollout_noise(self.wm, state, self.horizon, generator) if cfg.common_noise else None
                values, video = rollout_and_score(self.wm, state, actions, self.objective, instruction, generator,
                                                  noise, steps=cfg.flow_steps)
            else:
                values = self.objective(state.repeat(cfg.n), video, instruction)
        best = int(torch.nan_to_num(values.float(), nan=-float("inf")).argmax())
        return Plan(actions=to_numpy(actions[best]), latents=video[best].cpu(), score=float(values[best]),
                    info={"values": values.float().cpu().tolist(), "chosen": best,
                          "candidate_actions": to_numpy(actions),
                          "candidate_instructions": per_candidate, "resimulate": cfg.resimulate})
