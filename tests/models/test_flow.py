"""Flow matching: routing of modes by outcome, the loss can fit, sampling is reproducible and differentiable."""

from __future__ import annotations

import pytest
import torch

from flexwm.errors import ConfigError
from flexwm.models import flow
from flexwm.models.interface import FlexWorldModelWrapper, LatentState
from flexwm.models.world_model import FlexWorldModel, preset

EMBODIMENTS = {"arm": {"action_dim": 3, "proprio_dim": 5}, "gripper": {"action_dim": 2, "proprio_dim": 2}}


def make_model(seed: int = 0, **overrides) -> FlexWorldModel:
    torch.manual_seed(seed)
    model = FlexWorldModel(preset("tiny", embodiments=EMBODIMENTS, **overrides))
    with torch.no_grad():  # perturb zero-initialised layers so outputs depend on every input
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def make_batch(model: FlexWorldModel, B: int = 8, embodiment: str = "arm", seed: int = 1) -> dict:
    cfg, g = model.cfg, torch.Generator().manual_seed(seed)
    spec = cfg.embodiments[embodiment]
    return dict(embodiment=embodiment,
                context=torch.randn(B, cfg.context_frames, *cfg.latent_shape, generator=g),
                future=torch.randn(B, cfg.future_frames, *cfg.latent_shape, generator=g),
                actions=torch.rand(B, cfg.action_horizon, spec["action_dim"], generator=g) * 2 - 1,
                proprio=torch.randn(B, spec["proprio_dim"], generator=g),
                text=torch.randn(B, cfg.text_dim, generator=g), has_text=torch.ones(B, dtype=torch.bool),
                outcome=["success", "failure"] * (B // 2), success=torch.tensor([1.0, 0.0] * (B // 2)),
                progress=torch.rand(B, generator=g), valid=torch.ones(B, cfg.action_horizon, dtype=torch.bool))


OUTCOMES = ["success", "failure", "play"] * 400


def test_routing_failure_and_play_never_get_success_only_modes_or_instruction() -> None:
    cfg = preset("tiny", score_failure_instruction=False)
    m = flow.sample_modes(len(OUTCOMES), OUTCOMES, cfg, torch.Generator().manual_seed(0))
    by = {o: [i for i, x in enumerate(OUTCOMES) if x == o] for o in ("success", "failure", "play")}
    assert {m.names[i] for i in by["success"]} == set(flow.MODES)  # successes train every mode
    for o in ("failure", "play"):
        assert {m.names[i] for i in by[o]} == {"ac", "inverse", "video", "score", "uniform"}
        assert not m.keep_text[by[o]].any()
    assert m.keep_text[by["success"]].float().mean() > 0.3
    # the statuses follow the mode table
    for i, name in enumerate(m.names):
        vs, as_ = flow._STATUS[name]
        if name != "uniform":
            assert bool(m.video_present[i]) == (vs != flow.ABSENT) and bool(m.video_t[i] > 0) == (vs == flow.NOISED)
            assert bool(m.action_present[i]) == (as_ != flow.ABSENT)
            assert bool(m.action_t[i] > 0) == (as_ == flow.NOISED)
        else:
            assert bool(m.video_generated[i] | m.actions_generated[i])
    assert m.train_heads.tolist() == [n == "score" for n in m.names]


def test_routing_failures_keep_instruction_only_in_score_mode_by_default() -> None:
    m = flow.sample_modes(len(OUTCOMES), OUTCOMES, preset("tiny"), torch.Generator().manual_seed(1))
    kept = [(o, n) for o, n, k in zip(OUTCOMES, m.names, m.keep_text.tolist(), strict=True) if k]
    assert {o for o, n in kept if n != "score"} == {"success"}
    assert {o for o, _ in kept} == {"success", "failure"}  # play never has an instruction


def test_routing_variants() -> None:
    g = torch.Generator().manual_seed(0)
    m = flow.sample_modes(len(OUTCOMES), OUTCOMES, preset("tiny", variant="wam-only"), g)
    assert {n for n, o in zip(m.names, OUTCOMES, strict=True) if o == "success"} == {"wam"}
    assert {n for n, o in zip(m.names, OUTCOMES, strict=True) if o != "success"} == {"skip"}
    assert not (m.video_present | m.action_present)[[i for i, o in enumerate(OUTCOMES) if o != "success"]].any()
    m = flow.sample_modes(len(OUTCOMES), OUTCOMES, preset("tiny", variant="ac-only"), g)
    assert set(m.names) == {"ac", "score"}
    m = flow.sample_modes(6, [0, 1, 2, 0, 1, 2], preset("tiny", mode_weights={"policy": 1.0}), g)
    assert m.names == ["policy", "skip", "skip"] * 2


def test_skip_rows_and_invalid_steps_give_no_loss() -> None:
    model = make_model(variant="wam-only")
    batch = make_batch(model)
    fail = ["failure"] * 8
    loss, metrics = flow.flex_loss(model, batch, flow.sample_modes(8, fail, model.cfg), None)
    assert loss.item() == 0.0 and metrics["n_video"].item() == 0
    modes = flow.sample_modes(8, ["success"] * 8, model.cfg, torch.Generator().manual_seed(0))
    batch["valid"][:] = False  # padded steps (and the frames after them) are never trained on
    loss, metrics = flow.flex_loss(model, batch, modes, torch.Generator().manual_seed(0))
    assert loss.item() == 0.0
    batch["valid"][:, :2] = True
    loss, metrics = flow.flex_loss(model, batch, modes, torch.Generator().manual_seed(0))
    assert metrics["loss_action"] > 0 and metrics["loss_video"] > 0


def test_tiny_batch_is_overfitted() -> None:
    """Fixed modes and noise (generator re-seeded each step): flex_loss must fall >= 10x in 300 steps."""
    torch.manual_seed(0)
    model = FlexWorldModel(preset("tiny", embodiments=EMBODIMENTS, time_sampling="uniform"))
    batch = make_batch(model, B=8)
    modes = flow.sample_modes(8, batch["outcome"], model.cfg, torch.Generator().manual_seed(4))
    assert {"score", "video", "inverse"} <= set(modes.names)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(300):
        loss, _ = flow.flex_loss(model, batch, modes, torch.Generator().manual_seed(4))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_loss_falls_on_the_stochastic_objective() -> None:
    """Fresh modes, times and noise every step (the real objective): the loss still falls by a quarter."""
    torch.manual_seed(0)
    model = FlexWorldModel(preset("tiny", embodiments=EMBODIMENTS, time_sampling="uniform"))
    batch = make_batch(model, B=8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g, losses = torch.Generator().manual_seed(0), []
    for _ in range(300):
        loss, _ = flow.flex_loss(model, batch, flow.sample_modes(8, batch["outcome"], model.cfg, g), g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:30]) / 30, sum(losses[-30:]) / 30
    assert last < 0.75 * first, (first, last)


def test_sampling_is_reproducible_with_a_generator() -> None:
    model = make_model().eval()
    b = make_batch(model, B=3)
    cond = dict(embodiment="arm", context=b["context"], proprio=b["proprio"], text=b["text"],
                has_text=b["has_text"])
    with torch.no_grad():
        run = lambda seed, **kw: flow.sample(model, cond, generate={"video", "actions"}, steps=3,  # noqa: E731
                                             generator=torch.Generator().manual_seed(seed), **kw)
        a, a2, other = run(0), run(0), run(1)
        guided = run(0, cfg_scale=3.0)
    assert all(torch.equal(a[k], a2[k]) for k in a)
    assert not torch.equal(a["video"], other["video"]) and not torch.equal(a["actions"], other["actions"])
    assert not torch.equal(a["actions"], guided["actions"])


def test_action_guidance_interpolates_between_video_mode_and_ac_mode() -> None:
    """action_scale s: v = v(no actions) + s (v(actions) - v(no actions)); s = 0 is video mode, s = 1 plain AC."""
    model = make_model().eval()
    b = make_batch(model, B=3)
    noise = {"video": torch.randn(3, model.cfg.future_frames, *model.cfg.latent_shape)}
    base = dict(embodiment="arm", context=b["context"], proprio=b["proprio"])
    with torch.no_grad():
        run = lambda cond, **kw: flow.sample(model, cond, generate={"video"}, steps=3, noise=noise,  # noqa: E731
                                             **kw)["video"]
        ac, no_actions = run({**base, "actions": b["actions"]}), run(base)
        s0, s1 = run({**base, "actions": b["actions"]}, action_scale=0.0), run({**base, "actions": b["actions"]},
                                                                                action_scale=1.0)
        s3 = run({**base, "actions": b["actions"]}, action_scale=3.0)
        other = run({**base, "actions": -b["actions"]}, action_scale=3.0)
    assert torch.allclose(s0, no_actions, atol=1e-5) and torch.equal(s1, ac)
    assert not torch.allclose(s3, ac, atol=1e-3)
    # guidance makes the future depend more on the actions, not less
    assert (s3 - other).abs().mean() > (ac - run({**base, "actions": -b["actions"]})).abs().mean()
    wm = FlexWorldModelWrapper(model, tokenizer=None, embodiment="arm", steps=3, ac_guidance=3.0)
    state = LatentState(context=b["context"], proprio=b["proprio"], embodiment="arm")
    with torch.no_grad():
        assert torch.allclose(wm.rollout(state, b["actions"], noise=noise["video"][:, None]), s3, atol=1e-5)
    with pytest.raises(ConfigError, match="ac_guidance"):
        FlexWorldModelWrapper(model, tokenizer=None, embodiment="arm", ac_guidance=-1.0)


def test_gradient_flows_from_sampled_latents_to_actions() -> None:
    model = make_model().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    b = make_batch(model, B=2)
    actions = b["actions"].clone().requires_grad_(True)
    noise = {"video": torch.randn(2, model.cfg.future_frames, *model.cfg.latent_shape)}
    cond = dict(embodiment="arm", context=b["context"], proprio=b["proprio"], actions=actions)
    with torch.enable_grad():
        video = flow.sample(model, cond, generate={"video"}, steps=3, noise=noise)["video"]
        video.pow(2).mean().backward()
    assert actions.grad is not None and torch.isfinite(actions.grad).all() and actions.grad.abs().sum() > 0
    # through a two-chunk autoregressive rollout as well: the first chunk's actions move the second chunk
    wm = FlexWorldModelWrapper(model, tokenizer=None, embodiment="arm", steps=2)
    state = LatentState(context=b["context"], proprio=b["proprio"], embodiment="arm")
    H, Fr = model.cfg.action_horizon, model.cfg.future_frames
    plan = torch.randn(2, 2 * H, 3, requires_grad=True)
    wm.rollout(state, plan)[:, Fr:].sum().backward()
    assert plan.grad[:, :H].abs().sum() > 0


@pytest.mark.parametrize("sampling", ["uniform", "logit_normal"])
def test_times_are_in_range(sampling: str) -> None:
    t = flow.sample_times(5000, preset("tiny", time_sampling=sampling), torch.Generator().manual_seed(0))
    assert (t > 0).all() and (t <= 1).all() and 0.4 < t.mean() < 0.6


def test_residual_video_space_round_trips_and_zero_velocity_copies_the_last_context_frame() -> None:
    model = make_model(video_residual=True)
    with torch.no_grad():
        model.set_video_delta_std(torch.tensor([0.5, 1.0, 2.0, 0.25]))
        for p in model.video_out.parameters():
            p.zero_()  # the network predicts velocity 0 everywhere
    batch = make_batch(model)
    ctx, fut = batch["context"], batch["future"]
    res = model.video_to_model(fut, ctx)
    torch.testing.assert_close(model.video_from_model(res, ctx), fut)
    torch.testing.assert_close(res[:, :, 1], fut[:, :, 1] - ctx[:, -1:, 1])  # channel std 1
    torch.testing.assert_close(res[:, :, 0], (fut[:, :, 0] - ctx[:, -1:, 0]) / 0.5)
    # velocity 0 and initial noise 0 -> generated residual 0 -> the last context frame, for every future frame
    zero = torch.zeros_like(fut)
    out = flow.sample(model, {"embodiment": "arm", "context": ctx, "actions": batch["actions"]}, generate={"video"},
                      steps=3, noise={"video": zero})["video"]
    torch.testing.assert_close(out, ctx[:, -1:].expand_as(fut))


def test_residual_video_loss_target_is_the_scaled_difference() -> None:
    plain, resid = make_model(), make_model(video_residual=True)
    resid.load_state_dict({**plain.state_dict(), "video_delta_std": torch.ones(4)})
    batch = make_batch(plain)
    modes = flow.sample_modes(8, ["success"] * 8, plain.cfg, torch.Generator().manual_seed(0))
    lp, _ = flow.flex_loss(plain, batch, modes, torch.Generator().manual_seed(1))
    lr, _ = flow.flex_loss(resid, batch, modes, torch.Generator().manual_seed(1))
    shifted = {**batch, "future": batch["future"] - batch["context"][:, -1:]}
    l_shift, _ = flow.flex_loss(plain, shifted, modes, torch.Generator().manual_seed(1))
    torch.testing.assert_close(lr, l_shift)  # residual model == plain model fed the differences
    assert not torch.allclose(lr, lp)
    with pytest.raises(Exception, match="video_residual"):
        plain.set_video_delta_std(torch.ones(4))
