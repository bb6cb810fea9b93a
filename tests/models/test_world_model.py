"""FlexWorldModel: masking really hides inputs, shapes per mode, checkpoints, adapters, config strictness."""

from __future__ import annotations

import json

import pytest
import torch

from flexwm.config import from_dict
from flexwm.errors import ConfigError, FlexWMError
from flexwm.models import flow
from flexwm.models.interface import FlexWorldModelWrapper, LatentState, WorldModel
from flexwm.models.world_model import FlexWorldModel, WorldModelConfig, preset

EMBODIMENTS = {"arm": {"action_dim": 3, "proprio_dim": 5}, "gripper": {"action_dim": 2, "proprio_dim": 2}}


def make_model(seed: int = 0, **overrides) -> FlexWorldModel:
    """Tiny model with every weight perturbed, so zero-initialised layers do not make outputs trivially equal."""
    torch.manual_seed(seed)
    model = FlexWorldModel(preset("tiny", embodiments=EMBODIMENTS, **overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def make_inputs(model: FlexWorldModel, embodiment: str, B: int = 4, seed: int = 1) -> dict:
    cfg, g = model.cfg, torch.Generator().manual_seed(seed)
    spec = cfg.embodiments[embodiment]
    return dict(embodiment=embodiment,
                context=torch.randn(B, cfg.context_frames, *cfg.latent_shape, generator=g),
                future=torch.randn(B, cfg.future_frames, *cfg.latent_shape, generator=g),
                actions=torch.randn(B, cfg.action_horizon, spec["action_dim"], generator=g),
                proprio=torch.randn(B, spec["proprio_dim"], generator=g),
                text=torch.randn(B, cfg.text_dim, generator=g),
                video_t=torch.rand(B, generator=g), action_t=torch.rand(B, generator=g))


def outputs(model: FlexWorldModel, **kw) -> list[torch.Tensor]:
    with torch.no_grad():
        o = model(**kw)
    return [o.video, o.actions, o.success_logit, o.progress]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("modality,key", [("actions", "action_present"), ("video", "video_present"),
                                          ("text", "text_present"), ("proprio", "proprio_present")])
def test_absent_input_has_no_effect_bitwise(modality: str, key: str) -> None:
    model = make_model()
    kw = make_inputs(model, "arm")
    name = {"video": "future"}.get(modality, modality)
    mask = torch.tensor([True, False, True, False])  # examples 1 and 3 have the modality absent / dropped
    kw[key] = mask
    base = outputs(model, **kw)
    changed = kw[name].clone()
    changed[~mask] = 1e3 * torch.randn_like(changed[~mask])
    changed[1] = float("inf")  # values of an absent modality are never read, not even multiplied by zero
    assert same(base, outputs(model, **{**kw, name: changed}))
    # the time of an absent modality is ignored as well
    if modality in ("actions", "video"):
        t_key = "action_t" if modality == "actions" else "video_t"
        t = kw[t_key].clone()
        t[~mask] = torch.tensor([0.0, 0.99])
        assert same(base, outputs(model, **{**kw, t_key: t}))
    # non-vacuous: changing the same input where it is present does change the outputs
    present = kw[name].clone()
    present[mask] = torch.randn_like(present[mask])
    other = outputs(model, **{**kw, name: present})
    assert not torch.equal(base[2], other[2]) or not torch.equal(base[0], other[0])


def test_none_means_absent_for_whole_batch() -> None:
    model = make_model()
    kw = make_inputs(model, "arm")
    masked = {**kw, "action_present": torch.zeros(4, dtype=torch.bool)}
    assert same(outputs(model, **masked), outputs(model, **{**kw, "actions": None}))


MODES = {  # mode -> (generate, given keys)
    "wam": ({"video", "actions"}, ()),
    "ac": ({"video"}, ("actions",)),
    "inverse": ({"actions"}, ("future",)),
    "video": ({"video"}, ()),
    "policy": ({"actions"}, ()),
}


@pytest.mark.parametrize("embodiment", ["arm", "gripper"])
def test_every_mode_has_right_shapes_for_two_embodiments(embodiment: str) -> None:
    model = make_model()
    cfg = model.cfg
    kw = make_inputs(model, embodiment, B=3)
    A = cfg.embodiments[embodiment]["action_dim"]
    base = dict(embodiment=embodiment, context=kw["context"], proprio=kw["proprio"], text=kw["text"],
                has_text=torch.ones(3, dtype=torch.bool))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _mode, (generate, given) in MODES.items():
            out = flow.sample(model, {**base, **{k: kw[k] for k in given}}, generate=generate, steps=2, generator=g)
            assert set(out) == generate
            if "video" in generate:
                assert out["video"].shape == (3, cfg.future_frames, *cfg.latent_shape)
            if "actions" in generate:
                assert out["actions"].shape == (3, cfg.action_horizon, A)
            assert all(torch.isfinite(v).all() for v in out.values())
        p, prog = flow.score(model, kw["context"], kw["future"], kw["text"], embodiment=embodiment)
    assert p.shape == prog.shape == (3,)
    assert ((p > 0) & (p < 1) & (prog >= 0) & (prog <= 1)).all()


def test_wrong_action_dim_names_the_embodiment() -> None:
    model = make_model()
    kw = make_inputs(model, "arm")
    with pytest.raises(ConfigError, match="gripper"):
        model(**{**kw, "embodiment": "gripper"})
    with pytest.raises(ConfigError, match="add_embodiment"):
        model(**{**kw, "embodiment": "hexapod"})


def test_save_load_round_trip_and_mismatch_errors(tmp_path) -> None:
    model = make_model()
    model.set_action_stats("arm", [-2.0, 0.0, -1.0], [2.0, 1.0, 3.0])
    kw = make_inputs(model, "arm")
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    loaded = FlexWorldModel.from_pretrained(tmp_path / "ckpt").eval()
    assert same(outputs(model, **kw), outputs(loaded, **kw))
    a = torch.tensor([[1.0, 0.5, 2.0]])
    assert torch.equal(loaded.normalize_actions("arm", a), model.normalize_actions("arm", a))
    assert torch.allclose(loaded.unnormalize_actions("arm", loaded.normalize_actions("arm", a)), a)

    # a config that does not belong to the weights: the error names a tensor and both shapes
    cfg_path = tmp_path / "ckpt" / "config.json"
    data = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**data, "d_model": 32}))
    with pytest.raises(ConfigError, match=r"has shape .* but config.json implies"):
        FlexWorldModel.from_pretrained(tmp_path / "ckpt")
    cfg_path.write_text(json.dumps({**data, "embodiments": {"arm": EMBODIMENTS["arm"]}}))
    with pytest.raises(ConfigError, match="gripper"):
        FlexWorldModel.from_pretrained(tmp_path / "ckpt")
    cfg_path.write_text(json.dumps({**data, "d_modle": 64}))
    with pytest.raises(ConfigError, match="d_modle"):
        FlexWorldModel.from_pretrained(tmp_path / "ckpt")

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(FlexWMError, match="pickle"):
        FlexWorldModel.from_pretrained(pickled)


def test_adapter_only_finetuning_leaves_trunk_unchanged() -> None:
    model = make_model().train()
    model.add_embodiment("hand", action_dim=6, proprio_dim=3)
    assert model.cfg.embodiments["hand"] == {"action_dim": 6, "proprio_dim": 3}
    adapter = model.adapter_parameters("hand")
    ids = {id(p) for p in adapter}
    assert ids.isdisjoint(id(p) for p in model.trunk_parameters())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in ids)
    opt = torch.optim.AdamW(adapter, lr=1e-2)
    kw = make_inputs(model, "hand", B=8)
    batch = dict(embodiment="hand", context=kw["context"], future=kw["future"], actions=kw["actions"],
                 proprio=kw["proprio"], success=torch.ones(8), progress=torch.rand(8))
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        modes = flow.sample_modes(8, ["success"] * 8, model.cfg, g)
        loss, _ = flow.flex_loss(model, batch, modes, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("adapters.hand.") for n in changed)


def test_mistyped_config_key_is_named() -> None:
    with pytest.raises(ConfigError, match="'d_modle'.*Did you mean 'd_model'"):
        from_dict(WorldModelConfig, {"d_modle": 64})
    with pytest.raises(ConfigError, match="n_layer"):
        preset("tiny", n_layer=3)
    with pytest.raises(ConfigError, match="'wamm'.*'wam'"):
        preset("tiny", mode_weights={"wamm": 1.0})
    with pytest.raises(ConfigError, match="variant"):
        preset("tiny", variant="wam_only")
    with pytest.raises(ConfigError, match="patch_size"):
        preset("tiny", patch_size=3)
    with pytest.raises(ConfigError, match="action_dim"):
        preset("tiny", embodiments={"arm": {"action_dim": 0, "proprio_dim": 2}})


class StubTokenizer:
    """Frames (N, 16, 16, 3) -> latents (N, 4, 8, 8) by pooling; decode upsamples back."""

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.float().permute(0, 3, 1, 2) / 127.5 - 1
        x = torch.nn.functional.avg_pool2d(x, 2)
        return torch.cat([x, x.mean(1, keepdim=True)], 1)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(latents[:, :3], scale_factor=2).tanh()


class StubText:
    def embed(self, texts: list[str]) -> torch.Tensor:
        return torch.stack([torch.full((384,), float(len(t)) / 10) for t in texts])


def test_interface_wrapper_shapes_and_bounded_rollout() -> None:
    model = make_model()
    cfg = model.cfg
    wm = FlexWorldModelWrapper(model, StubTokenizer(), StubText(), embodiment="arm", steps=2)
    assert isinstance(wm, WorldModel)
    frames = torch.randint(0, 256, (2, 16, 16, 3), dtype=torch.uint8)
    state = wm.encode(frames, proprio=torch.randn(2, 5))
    assert isinstance(state, LatentState) and state.context.shape == (2, cfg.context_frames, *cfg.latent_shape)
    g = torch.Generator().manual_seed(0)
    T = 3 * cfg.action_horizon + 2  # not a multiple of H: last chunk padded
    with torch.no_grad():
        video = wm.rollout(state, torch.randn(2, T, 3), generator=g)
        assert video.shape == (2, T // cfg.frame_stride, *cfg.latent_shape)
        actions, latents = wm.propose(state, "open the door", n=3, generator=g)
        assert actions.shape == (2, 3, cfg.action_horizon, 3)
        assert latents.shape == (2, 3, cfg.future_frames, *cfg.latent_shape)
        assert wm.inverse(state, latents[:, 0], generator=g).shape == (2, cfg.action_horizon, 3)
        p, prog = wm.score(state, latents[:, 0], "open the door")
        assert p.shape == prog.shape == (2,)
        frames_out = wm.decode(video)
    assert frames_out.shape == (2, T // cfg.frame_stride, 16, 16, 3) and frames_out.dtype == torch.uint8


def test_rollout_chunks_match_single_chunk_sampling() -> None:
    """The first chunk of a rollout is exactly the AC-mode sample with the same noise."""
    model = make_model()
    cfg = model.cfg
    wm = FlexWorldModelWrapper(model, StubTokenizer(), embodiment="arm", steps=3)
    state = LatentState(context=torch.randn(2, cfg.context_frames, *cfg.latent_shape), proprio=torch.randn(2, 5),
                        embodiment="arm")
    actions = torch.randn(2, 2 * cfg.action_horizon, 3)
    noise = torch.randn(2, 2, cfg.future_frames, *cfg.latent_shape)
    with torch.no_grad():
        video = wm.rollout(state, actions, noise=noise)
        first = flow.sample(model, dict(embodiment="arm", context=state.context, proprio=state.proprio,
                                        actions=actions[:, : cfg.action_horizon]),
                            generate={"video"}, steps=3, noise={"video": noise[:, 0]})["video"]
    assert torch.equal(video[:, : cfg.future_frames], first)
    assert not torch.equal(video[:, cfg.future_frames:], first)


def test_zero_ac_noise_rollouts_are_deterministic() -> None:
    model = make_model()
    cfg = model.cfg
    state = LatentState(context=torch.randn(2, cfg.context_frames, *cfg.latent_shape), proprio=torch.randn(2, 5),
                        embodiment="arm")
    actions = torch.randn(2, 2 * cfg.action_horizon, 3)
    zero = FlexWorldModelWrapper(model, StubTokenizer(), embodiment="arm", steps=3, ac_noise="zero")
    sampled = FlexWorldModelWrapper(model, StubTokenizer(), embodiment="arm", steps=3)
    with torch.no_grad():
        a = zero.rollout(state, actions, generator=torch.Generator().manual_seed(1))
        b = zero.rollout(state, actions, generator=torch.Generator().manual_seed(2))
        c = sampled.rollout(state, actions, noise=torch.zeros(2, 2, cfg.future_frames, *cfg.latent_shape))
        d = sampled.rollout(state, actions, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and torch.equal(a, c) and not torch.equal(a, d)
    with pytest.raises(ConfigError, match="ac_noise"):
        FlexWorldModelWrapper(model, StubTokenizer(), embodiment="arm", ac_noise="mean")


def test_gradient_checkpointing_recomputes_blocks_with_the_same_gradients():
    torch.manual_seed(0)
    model = FlexWorldModel(preset("tiny", embodiments={"sawyer": {"action_dim": 4, "proprio_dim": 4}}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    cfg, B, g = model.cfg, 6, torch.Generator().manual_seed(0)
    batch = dict(embodiment="sawyer", context=torch.randn(B, cfg.context_frames, *cfg.latent_shape, generator=g),
                 future=torch.randn(B, cfg.future_frames, *cfg.latent_shape, generator=g),
                 actions=torch.rand(B, cfg.action_horizon, 4, generator=g) * 2 - 1,
                 proprio=torch.randn(B, 4, generator=g), text=torch.randn(B, cfg.text_dim, generator=g),
                 has_text=torch.ones(B, dtype=torch.bool), success=torch.ones(B), progress=torch.rand(B, generator=g),
                 valid=torch.ones(B, cfg.action_horizon, dtype=torch.bool))
    calls = []
    model.blocks[0].register_forward_pre_hook(lambda *_: calls.append(1))

    def step(checkpointing: bool):
        model.gradient_checkpointing = checkpointing
        model.zero_grad()
        calls.clear()
        modes = flow.sample_modes(B, ["success"] * B, cfg, torch.Generator().manual_seed(1))
        loss, _ = flow.flex_loss(model, batch, modes, torch.Generator().manual_seed(2))
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, len(calls)

    loss_a, grads_a, calls_a = step(False)
    loss_b, grads_b, calls_b = step(True)
    assert (calls_a, calls_b) == (1, 2)  # the block ran again in the backward pass
    assert torch.equal(loss_a, loss_b) and grads_a.keys() == grads_b.keys()
    for k in grads_a:
        torch.testing.assert_close(grads_b[k], grads_a[k], rtol=1e-6, atol=1e-7)


def test_an_empty_batch_runs_forward_and_backward():
    """Under torchrun a process may hold no row of a small embodiment group; it still runs the model."""
    model = FlexWorldModel(preset("tiny", embodiments={"sawyer": {"action_dim": 4, "proprio_dim": 4}}))
    cfg = model.cfg
    out = model(embodiment="sawyer", context=torch.zeros(0, cfg.context_frames, *cfg.latent_shape),
                future=torch.zeros(0, cfg.future_frames, *cfg.latent_shape),
                actions=torch.zeros(0, cfg.action_horizon, 4), proprio=torch.zeros(0, 4),
                text=torch.zeros(0, cfg.text_dim))
    assert out.video.shape[0] == out.actions.shape[0] == out.success_logit.shape[0] == 0
    (out.video.sum() + out.actions.sum()).backward()
    assert model.blocks[0].qkv.weight.grad is not None
