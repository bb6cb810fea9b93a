"""Flow matching for the flexible world model, as plain functions of tensors.

Rectified flow: x_t = (1 - t) * x0 + t * noise, t = 0 clean, t = 1 pure noise. The network predicts the
velocity v = noise - x0 (dx_t/dt), so sampling integrates dx = v dt from t = 1 down to t = 0 (Euler).
We predict velocity rather than x0 because it is the standard rectified-flow target (well-scaled at both
ends of t, no division by t when sampling), and both modalities use the same target.

Training (`sample_modes` then `flex_loss`): every example draws a mode, which decides per modality whether it
is clean (t = 0, a condition), noised (t in (0, 1), generated, gets a loss) or absent (learned token, no loss,
no information), and whether the instruction is kept:

| mode    | video  | actions | instruction               | outcomes that may use it        |
| wam     | noised | noised  | kept (p = 1 - drop)       | success                         |
| policy  | absent | noised  | kept                      | success                         |
| ac      | noised | clean   | null                      | all                             |
| inverse | clean  | noised  | null                      | all                             |
| video   | noised | absent  | kept (successes only)     | all                             |
| score   | clean  | absent  | kept (successes, failures | all; trains the success and     |
|         |        |         |  if score_failure_instr.) |  progress heads                 |
| uniform | each independently clean / noised / absent (>= 1 noised), independent times; kept for successes |
| skip    | absent | absent  | null                      | rows a variant cannot use       |

Noised times are drawn independently per modality (as in Unified World Models). The success/progress heads
are trained only on score-mode rows: there the inputs (clean video, absent actions, instruction kept with
the same probability for successes and failures) carry no hint of the outcome other than the video itself.
Training the heads on every row would let them read the outcome off the mode (wam/policy rows are always
successes) or off whether an instruction is present. Failure and play rows never carry an instruction in the
generative modes, so instruction-conditioned generation models successes only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from flexwm.errors import ConfigError
from flexwm.models.world_model import MODES, FlexWorldModel, ModelOutput, WorldModelConfig


@dataclass(frozen=True)
class Shard:
    """This process's rows of a batch shared by `world` processes: a contiguous, balanced slice of every group of
    rows (a process may get none of a small group), and sums over processes."""

    rank: int = 0
    world: int = 1

    def rows(self, n: int) -> slice:
        return slice(n * self.rank // self.world, n * (self.rank + 1) // self.world)

    def all_sum(self, x: torch.Tensor) -> torch.Tensor:
        """The sum of `x` over processes (a new tensor; `x` itself when there is one process)."""
        if self.world == 1:
            return x
        x = x.detach().clone()
        dist.all_reduce(x)
        return x


# episode outcome (flexwm.data.episode.OUTCOMES) -> code; the one table, used by training (flexwm.training.run) too
# unlabelled: an episode of a dataset flexwm did not write, outcome not declared (trained like play, and never
# the success/progress heads: its success is unknown)
OUTCOME_CODES = {"success": 0, "failure": 1, "play": 2, "unlabelled": 3}
MODE_NAMES = (*MODES, "skip")
SUCCESS_ONLY_MODES = ("wam", "policy")
CLEAN, NOISED, ABSENT = 0, 1, 2
# mode -> (video status, action status); uniform draws its statuses
_STATUS = {"wam": (NOISED, NOISED), "policy": (ABSENT, NOISED), "ac": (NOISED, CLEAN),
           "inverse": (CLEAN, NOISED), "video": (NOISED, ABSENT), "score": (CLEAN, ABSENT),
           "uniform": (NOISED, NOISED), "skip": (ABSENT, ABSENT)}
_TEXT_MODES = ("wam", "policy", "video", "score", "uniform")


@dataclass
class ModeSpec:
    """Per-example conditioning drawn for one training batch (all tensors of shape (B,))."""

    names: list[str]
    video_t: Tensor  # float; 0 where clean or absent
    video_present: Tensor  # bool
    action_t: Tensor
    action_present: Tensor
    keep_text: Tensor  # bool: instruction allowed (still needs has_text)
    keep_proprio: Tensor  # bool
    train_heads: Tensor  # bool: success/progress losses apply (score mode)

    @property
    def video_generated(self) -> Tensor:
        return self.video_present & (self.video_t > 0)

    @property
    def actions_generated(self) -> Tensor:
        return self.action_present & (self.action_t > 0)

    def to(self, device: torch.device | str) -> ModeSpec:
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        return ModeSpec(**{k: v.to(device) if isinstance(v, Tensor) else v for k, v in kw.items()})

    def select(self, rows: slice) -> ModeSpec:
        return ModeSpec(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})


def outcome_codes(outcomes: Any, batch_size: int) -> Tensor:
    """list[str] ('success'/'failure'/'play'/'unlabelled') or int codes (0/1/2/3) -> (B,) long tensor."""
    if isinstance(outcomes, Tensor):
        codes = outcomes.long().cpu().reshape(-1)
    else:
        outcomes = list(outcomes)
        try:
            codes = torch.tensor([OUTCOME_CODES[o] if isinstance(o, str) else int(o) for o in outcomes])
        except KeyError as e:
            raise ConfigError(f"unknown outcome {e.args[0]!r}; use one of {list(OUTCOME_CODES)}") from None
    if codes.numel() != batch_size or codes.numel() and not bool(((codes >= 0) & (codes <= 3)).all()):
        raise ConfigError(f"need {batch_size} outcomes coded 0 success / 1 failure / 2 play / 3 unlabelled, got "
                          f"{codes.tolist()}")
    return codes


def mode_weights(cfg: WorldModelConfig, outcome: int) -> dict[str, float]:
    """The modes an example of this outcome may use under `cfg.variant`, with their weights."""
    success = outcome == OUTCOME_CODES["success"]
    if cfg.variant == "wam-only":
        return {"wam": 1.0} if success else {}
    names = ("ac", "score") if cfg.variant == "ac-only" else MODES
    if not success:
        names = tuple(m for m in names if m not in SUCCESS_ONLY_MODES)
    if outcome == OUTCOME_CODES["unlabelled"]:  # success unknown: nothing for the success/progress heads
        names = tuple(m for m in names if m != "score")
    w = {m: float(cfg.mode_weights.get(m, 0.0)) for m in names}
    if cfg.variant == "ac-only" and sum(w.values()) <= 0:
        w = {"ac": 1.0}
    return {m: v for m, v in w.items() if v > 0}


def sample_times(n: int, cfg: WorldModelConfig, generator: torch.Generator | None = None) -> Tensor:
    """Flow times in (0, 1]: uniform or logit-normal (SD3), clamped away from 0."""
    if cfg.time_sampling == "uniform":
        t = torch.rand(n, generator=generator)
    else:
        t = torch.sigmoid(cfg.logit_normal_mean + cfg.logit_normal_std * torch.randn(n, generator=generator))
    return t.clamp(1e-4, 1.0)


def sample_modes(batch_size: int, outcomes: Any, cfg: WorldModelConfig,
                 generator: torch.Generator | None = None) -> ModeSpec:
    """Draw a mode per example honouring data routing (see the module docstring). Returns CPU tensors."""
    codes = outcome_codes(outcomes, batch_size)
    table = torch.zeros(len(OUTCOME_CODES), len(MODE_NAMES))
    for o in range(len(OUTCOME_CODES)):
        w = mode_weights(cfg, o)
        for m, v in w.items():
            table[o, MODE_NAMES.index(m)] = v
        if not w:
            table[o, MODE_NAMES.index("skip")] = 1.0
    idx = torch.multinomial(table[codes], 1, generator=generator).squeeze(1) if batch_size else codes
    names = [MODE_NAMES[i] for i in idx.tolist()]

    status = torch.tensor([_STATUS[m] for m in names], dtype=torch.long).reshape(batch_size, 2)
    # uniform: each modality clean / noised / absent with p = 1/4, 1/2, 1/4; at least one noised
    u = torch.multinomial(torch.tensor([0.25, 0.5, 0.25]), 2 * batch_size, replacement=True,
                          generator=generator).reshape(batch_size, 2)
    u[:, 0] = torch.where((u != NOISED).all(1), NOISED, u[:, 0])
    is_uniform = torch.tensor([m == "uniform" for m in names], dtype=torch.bool)
    status = torch.where(is_uniform[:, None], u, status)

    t = sample_times(2 * batch_size, cfg, generator).reshape(batch_size, 2)
    t = torch.where(status == NOISED, t, torch.zeros_like(t))
    present = status != ABSENT

    success = codes == OUTCOME_CODES["success"]
    failure = codes == OUTCOME_CODES["failure"]
    is_score = torch.tensor([m == "score" for m in names], dtype=torch.bool)
    text_mode = torch.tensor([m in _TEXT_MODES for m in names], dtype=torch.bool)
    allowed = text_mode & (success | (is_score & failure & cfg.score_failure_instruction))
    keep_text = allowed & (torch.rand(batch_size, generator=generator) >= cfg.instruction_drop)
    keep_proprio = torch.rand(batch_size, generator=generator) >= cfg.proprio_drop
    return ModeSpec(names=names, video_t=t[:, 0], video_present=present[:, 0], action_t=t[:, 1],
                    action_present=present[:, 1], keep_text=keep_text, keep_proprio=keep_proprio,
                    train_heads=is_score)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normal noise drawn on the generator's device, then moved to `like`'s device and dtype."""
    dev = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=dev).to(device=like.device, dtype=like.dtype)


def _masked_mean(err: Tensor, mask: Tensor) -> Tensor:
    mask = mask.to(err.dtype)
    return (err * mask).sum() / mask.sum().clamp_min(1.0)


def flex_loss(model: FlexWorldModel, batch: dict[str, Any], modes: ModeSpec,
              generator: torch.Generator | None = None, shard: Shard | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Flow-matching loss on the generated modalities + success BCE and progress MSE on score rows.

    batch: context (B,C,c,h,w), future (B,F,c,h,w), actions (B,H,A) native units, proprio (B,P), text (B,384),
    has_text (B,) bool, success (B,) float, progress (B,) float, valid (B,H) bool (padded steps False),
    optional future_valid (B,F) bool (default: frame k valid iff action (k+1)*frame_stride-1 is valid),
    embodiment str. Video MSE is averaged over valid generated frames, action MSE over valid generated steps.
    Metrics are detached tensors (call .item() when logging, not every step).

    `shard` (processes started by torchrun): `batch` holds only this process's rows `shard.rows(n)` of a batch of
    n rows shared by the processes, while `modes` and the noise are drawn for all n rows (identical generators on
    every process); each masked mean divides by the count summed over processes and is multiplied by their number
    (their gradients are averaged), so together they compute the one-process loss. Metrics are then the batch's.
    """
    cfg, emb = model.cfg, batch["embodiment"]
    context = batch["context"]
    x0_v = model.video_to_model(batch["future"], context)
    dev = context.device
    B = context.shape[0]
    n_all = len(modes.names)
    rows = slice(0, n_all) if shard is None else shard.rows(n_all)
    if rows.stop - rows.start != B:
        raise ConfigError(f"the batch has {B} rows but the modes were drawn for rows {rows.start}:{rows.stop}")
    m = modes.to(dev) if shard is None else modes.select(rows).to(dev)
    x0_a = model.normalize_actions(emb, batch["actions"])
    valid = batch.get("valid")
    valid = torch.ones(x0_a.shape[:2], dtype=torch.bool, device=dev) if valid is None else valid.to(dev).bool()
    future_valid = batch.get("future_valid")
    if future_valid is None:
        future_valid = valid[:, cfg.frame_stride - 1::cfg.frame_stride]
    text = batch.get("text")
    has_text = batch.get("has_text")
    if text is not None and has_text is None:
        has_text = text.abs().sum(-1) > 0

    if shard is None:
        noise_v, noise_a = _randn(tuple(x0_v.shape), generator, x0_v), _randn(tuple(x0_a.shape), generator, x0_a)
    else:  # the noise of the whole batch, this process's rows of it
        noise_v = _randn((n_all, *x0_v.shape[1:]), generator, x0_v)[rows]
        noise_a = _randn((n_all, *x0_a.shape[1:]), generator, x0_a)[rows]
    tv, ta = m.video_t.to(x0_v.dtype), m.action_t.to(x0_a.dtype)
    xt_v = (1 - tv.view(B, 1, 1, 1, 1)) * x0_v + tv.view(B, 1, 1, 1, 1) * noise_v
    xt_a = (1 - ta.view(B, 1, 1)) * x0_a + ta.view(B, 1, 1) * noise_a
    text_present = m.keep_text & has_text.to(dev).bool() if text is not None else None
    out = model(embodiment=emb, context=context, future=xt_v, actions=xt_a, proprio=batch.get("proprio"),
                text=text, video_t=m.video_t, action_t=m.action_t, video_present=m.video_present,
                action_present=m.action_present, text_present=text_present, proprio_present=m.keep_proprio)

    err_v = (out.video - (noise_v - x0_v)).pow(2).mean(dim=(2, 3, 4))  # (B, F)
    err_a = (out.actions - (noise_a - x0_a)).pow(2).mean(dim=-1)  # (B, H)
    mask_v, mask_a = m.video_generated[:, None] & future_valid.to(dev).bool(), m.actions_generated[:, None] & valid
    heads = bool(modes.train_heads.any())  # host-side mask (of the whole batch): no device sync
    mean = lambda err, mask, _: _masked_mean(err, mask)  # noqa: E731
    if shard is not None:  # denominators summed over processes, in one all-reduce
        counts = shard.all_sum(torch.stack([mask_v.sum(), mask_a.sum(), m.train_heads.sum()]).to(err_v.dtype))
        denom = dict(zip(("v", "a", "s"), counts.clamp_min(1.0) / shard.world))
        mean = lambda err, mask, k: (err * mask.to(err.dtype)).sum() / denom[k]  # noqa: E731
    loss_v = mean(err_v, mask_v, "v")
    loss_a = mean(err_a, mask_a, "a")
    loss_s = loss_p = out.success_logit.new_zeros(())
    if heads:
        if batch.get("success") is None or batch.get("progress") is None:
            raise ConfigError("score-mode rows need batch['success'] and batch['progress'] labels")
        succ = batch["success"].to(dev, out.success_logit.dtype)
        prog = batch["progress"].to(dev, out.progress.dtype)
        loss_s = mean(F.binary_cross_entropy_with_logits(out.success_logit, succ, reduction="none"),
                      m.train_heads, "s")
        loss_p = mean((out.progress - prog).pow(2), m.train_heads, "s")
    loss = (cfg.video_loss_weight * loss_v + cfg.action_loss_weight * loss_a
            + cfg.success_loss_weight * loss_s + cfg.progress_loss_weight * loss_p)
    metrics = {"loss": loss.detach(), "loss_video": loss_v.detach(), "loss_action": loss_a.detach(),
               "loss_success": loss_s.detach(), "loss_progress": loss_p.detach(),
               "n_video": m.video_generated.sum(), "n_action": m.actions_generated.sum(),
               "n_score": m.train_heads.sum()}
    if shard is not None:  # the batch's metrics: losses averaged over processes, counts summed
        keys = list(metrics)
        total = shard.all_sum(torch.stack([metrics[k].float() for k in keys]))
        metrics = {k: v / shard.world if k.startswith("loss") else v for k, v in zip(keys, total)}
    return loss, metrics


def _predict(model: FlexWorldModel, kw: dict[str, Any], cfg_scale: float, action_scale: float = 1.0) -> ModelOutput:
    """One model call, with classifier-free guidance on the instruction (cfg_scale != 1) and on clean
    conditioning actions (action_scale != 1: v = v(actions absent) + s * (v(actions) - v(actions absent)))."""
    out = model(**kw)
    if cfg_scale != 1.0 and kw.get("text") is not None:
        unc = model(**{**kw, "text": None, "text_present": None})
        out = ModelOutput(video=unc.video + cfg_scale * (out.video - unc.video),
                          actions=unc.actions + cfg_scale * (out.actions - unc.actions),
                          success_logit=out.success_logit, progress=out.progress)
    if action_scale != 1.0 and kw.get("actions") is not None:
        unc = model(**{**kw, "actions": None, "action_present": None})
        out = ModelOutput(video=unc.video + action_scale * (out.video - unc.video), actions=out.actions,
                          success_logit=out.success_logit, progress=out.progress)
    return out


def sample(model: FlexWorldModel, cond: dict[str, Any], *, generate: set[str] | frozenset[str] | tuple[str, ...],
           steps: int = 10, generator: torch.Generator | None = None, noise: dict[str, Tensor] | None = None,
           cfg_scale: float = 1.0, action_scale: float = 1.0) -> dict[str, Tensor]:
    """Generate `generate` (subset of {"video", "actions"}) given `cond`, by Euler steps from t = 1 to t = 0.

    cond: embodiment, context (B,C,c,h,w), optional proprio (B,P), text (B,384) + has_text (B,),
    future (B,F,c,h,w) clean (inverse dynamics / scoring input), actions (B,H,A) native (action-conditioned).
    The mode follows from what is given: {"video"} with actions -> ac, without -> video; {"actions"} with
    future -> inverse, without -> policy; both -> wam. `noise` = {"video": (B,F,c,h,w), "actions": (B,H,A)}
    fixes the initial noise (actions in normalized units). `cfg_scale` guides on the instruction;
    `action_scale` guides video generation on the given actions against the same model with actions absent
    (only when actions are a condition: AC mode), which strengthens how much the future follows them.
    Differentiable under torch.enable_grad(): no
    in-place updates and no host syncs on the path. Returns {"video": latents, "actions": native actions}.
    """
    generate = set(generate)
    if not generate or generate - {"video", "actions"}:
        raise ConfigError(f"generate must be a non-empty subset of {{'video', 'actions'}}, got {generate}")
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    cfg, emb, context = model.cfg, cond["embodiment"], cond["context"]
    B, A = context.shape[0], model.adapter(emb).action_dim
    gen_v, gen_a = "video" in generate, "actions" in generate
    noise = noise or {}
    x_v = noise.get("video") if gen_v else cond.get("future")
    if not gen_v and x_v is not None:
        x_v = model.video_to_model(x_v, context)
    if gen_v and x_v is None:
        x_v = _randn((B, cfg.future_frames, *cfg.latent_shape), generator, context)
    x_a = noise.get("actions") if gen_a else cond.get("actions")
    if gen_a and x_a is None:
        x_a = _randn((B, cfg.action_horizon, A), generator, context)
    elif not gen_a and x_a is not None:
        x_a = model.normalize_actions(emb, x_a)
    text = cond.get("text")
    kw = dict(embodiment=emb, context=context, proprio=cond.get("proprio"), text=text,
              text_present=None if text is None else cond.get("has_text"))
    zeros = torch.zeros(B, device=context.device)
    for i in range(steps):
        t = torch.full((B,), 1.0 - i / steps, device=context.device)
        out = _predict(model, {**kw, "future": x_v, "actions": x_a, "video_t": t if gen_v else zeros,
                               "action_t": t if gen_a else zeros}, cfg_scale,
                       action_scale if not gen_a else 1.0)
        if gen_v:
            x_v = x_v - out.video / steps
        if gen_a:
            x_a = x_a - out.actions / steps
    result = {}
    if gen_v:
        result["video"] = model.video_from_model(x_v, context)
    if gen_a:
        result["actions"] = model.unnormalize_actions(emb, x_a)
    return result


def score(model: FlexWorldModel, context: Tensor, future: Tensor, text: Tensor | None = None, *,
          embodiment: str, proprio: Tensor | None = None, has_text: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Success probability and progress (both (B,)) of a clean future video, actions absent (score mode)."""
    B = context.shape[0]
    out = model(embodiment=embodiment, context=context, future=model.video_to_model(future, context),
                proprio=proprio, text=text,
                text_present=has_text, video_t=torch.zeros(B, device=context.device))
    return torch.sigmoid(out.success_logit), out.progress
