"""The diffusers video backbone (WanTransformer3DModel trunk, AutoencoderKLWan tokenizer) with tiny random
configurations of the real classes, as diffusers tests its own models."""

from __future__ import annotations

import json

import pytest
import torch

from flexwm.errors import ConfigError
from flexwm.models.tokenizer import FrameTokenizer, load_tokenizer
from flexwm.models.tokenizer import preset as tok_preset
from flexwm.models.world_model import FlexWorldModel, patchify, preset, unpatchify

diffusers = pytest.importorskip("diffusers")
from flexwm.models.video_backbone import TINY_CONFIGS  # noqa: E402
from flexwm.models.video_vae import TINY_VAE_CONFIGS  # noqa: E402

WAN = "diffusers:wan"


def _cfg(**kw):
    return preset("tiny", backbone=WAN, backbone_config=TINY_CONFIGS[WAN], **kw)


def _inputs(B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(embodiment="sawyer", context=r(B, 1, 4, 8, 8), future=r(B, 2, 4, 8, 8), actions=r(B, 4, 4),
                proprio=r(B, 4), text=r(B, 384), video_t=torch.rand(B, generator=g),
                action_t=torch.rand(B, generator=g))


def _pipeline_folder(root, seed=0):
    """A diffusers pipeline folder as downloaded ahead of time: model_index.json + transformer/ + vae/."""
    torch.manual_seed(seed)
    transformer = diffusers.WanTransformer3DModel(**TINY_CONFIGS[WAN])
    vae = diffusers.AutoencoderKLWan(**TINY_VAE_CONFIGS[WAN])
    transformer.save_pretrained(root / "transformer")
    vae.save_pretrained(root / "vae")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline",
                                                       "transformer": ["diffusers", "WanTransformer3DModel"],
                                                       "vae": ["diffusers", "AutoencoderKLWan"]}))
    return root, transformer, vae


def test_the_trunk_fixes_the_width_and_every_output_has_its_shape() -> None:
    cfg = _cfg()
    assert (cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.patch_size) == (32, 2, 2, 2)  # the backbone's, not the preset's
    model = FlexWorldModel(cfg)
    assert len(model.blocks) == 0 and isinstance(model.trunk.transformer, diffusers.WanTransformer3DModel)
    out = model(**_inputs())
    assert out.video.shape == (3, 2, 4, 8, 8) and out.actions.shape == (3, 4, 4)
    assert out.success_logit.shape == (3,) and ((out.progress >= 0) & (out.progress <= 1)).all()


@pytest.mark.parametrize("modality", ["future", "actions", "text", "proprio"])
def test_absent_input_has_no_effect_bitwise(modality: str) -> None:
    torch.manual_seed(0)
    model = FlexWorldModel(_cfg()).eval()
    with torch.no_grad():  # zero-initialised outputs would hide whether present inputs matter at all
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = _inputs()
    present = {"future": "video_present", "actions": "action_present", "text": "text_present",
               "proprio": "proprio_present"}[modality]
    mask = torch.tensor([True, False, True])
    y = dict(x, **{modality: x[modality] + 100.0 * torch.randn_like(x[modality])})
    with torch.no_grad():
        a, b = model(**x, **{present: mask}), model(**y, **{present: mask})
    for k in ("video", "actions", "success_logit"):
        assert torch.equal(getattr(a, k)[1], getattr(b, k)[1]), k  # the absent example never reads the values
        assert not torch.equal(getattr(a, k)[0], getattr(b, k)[0])  # a present one does


def _one_step(model: FlexWorldModel) -> dict[str, torch.Tensor]:
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    out = model(**_inputs())
    (out.video.square().mean() + out.actions.square().mean() + out.success_logit.square().mean()).backward()
    opt.step()
    return {k: not torch.equal(before[k], v) for k, v in model.named_parameters()}


@pytest.mark.parametrize("mode", ["full", "partial", "lora"])
def test_finetune_modes_change_only_what_they_train(mode: str) -> None:
    torch.manual_seed(0)
    model = FlexWorldModel(_cfg(trunk_finetune=mode, trunk_blocks=[0] if mode == "partial" else [], lora_rank=4))
    changed = _one_step(model)
    trunk = {k: v for k, v in changed.items() if k.startswith("trunk.")}
    own = {k: v for k, v in changed.items() if not k.startswith("trunk.") and "adapters." not in k}
    assert changed["patch_in.weight"] and changed["head.weight"]  # flexwm's own layers always train
    assert sum(own.values()) >= len(own) // 2
    unused = [k for k in trunk if any(s in k for s in ("patch_embedding", "text_embedder", "proj_out",
                                                       "transformer.scale_shift_table"))]
    assert unused and not any(trunk[k] for k in unused)  # Wan's own input/output layers are never trained
    if mode == "full":
        assert all(trunk[k] for k in trunk if ".blocks." in k and "norm" not in k and "attn2" not in k)
    if mode == "partial":
        assert any(trunk[k] for k in trunk if ".blocks.0." in k)
        assert not any(trunk[k] for k in trunk if ".blocks.1." in k)
    if mode == "lora":
        lora = [k for k in trunk if "lora_" in k]
        assert lora and all(model.get_parameter(k).requires_grad for k in lora)
        assert not any(trunk[k] for k in trunk if "lora_" not in k)  # the pretrained weights stay as they were
        assert any(trunk[k] for k in lora if "lora_B" in k)


def test_pretrained_folder_loads_offline_then_checkpoints_are_self_contained(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root, transformer, _ = _pipeline_folder(tmp_path / "wan")
    for pretrained in (root, root / "transformer"):  # a pipeline folder or the transformer's own folder
        cfg = preset("tiny", backbone=WAN, pretrained=str(pretrained), trunk_finetune="lora",
                     lora_rank=4)
        assert cfg.backbone_config["num_layers"] == 2  # read from the folder's config.json
        model = FlexWorldModel(cfg, load_pretrained=True)
        ref = transformer.state_dict()
        got = {k.replace(".base_layer", ""): v for k, v in model.trunk.transformer.state_dict().items()
               if "lora_" not in k}
        assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)
    # flexwm's patch projection starts as Wan's patch embedding, its video output as Wan's proj_out
    x = torch.randn(2, 3, 4, 8, 8)  # (B, T, c, h, w)
    wan = transformer.patch_embedding(x.transpose(1, 2)).flatten(2).transpose(1, 2)
    torch.testing.assert_close(model.patch_in(patchify(x, 2)), wan)
    h = torch.randn(2, 3 * 16, 32)
    p_t, p_h, p_w = transformer.config.patch_size
    y = transformer.proj_out(h).reshape(2, 3, 4, 4, p_t, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    y = y.flatten(6, 7).flatten(4, 5).flatten(2, 3).transpose(1, 2)  # Wan's unpatchify -> (B, T, c, h, w)
    torch.testing.assert_close(unpatchify(model.video_out(h), 3, (4, 8, 8), 2), y)
    # a checkpoint needs neither the folder nor the network: it holds the whole trunk and its config
    model.save_pretrained(tmp_path / "ckpt")
    import shutil

    shutil.rmtree(root)
    again = FlexWorldModel.from_pretrained(tmp_path / "ckpt").eval()
    model.eval()
    with torch.no_grad():
        a, b = model(**_inputs()), again(**_inputs())
    torch.testing.assert_close(a.video, b.video)
    torch.testing.assert_close(a.actions, b.actions)


def test_errors_name_the_problem_and_the_fix(tmp_path) -> None:
    with pytest.raises(ConfigError, match="model.pretrained=DIR"):
        FlexWorldModel(preset("tiny", backbone=WAN))
    with pytest.raises(ConfigError, match="text-to-video checkpoint"):
        preset("tiny", backbone=WAN, backbone_config={**TINY_CONFIGS[WAN], "added_kv_proj_dim": 32})
    with pytest.raises(ConfigError, match="save_pretrained"):
        preset("tiny", backbone=WAN, pretrained=str(tmp_path))
    with pytest.raises(ConfigError, match="diffusers backbone"):
        FlexWorldModel(preset("tiny", trunk_finetune="lora"))
    with pytest.raises(ConfigError, match="blocks \\[5\\] do not exist"):
        FlexWorldModel(_cfg(trunk_finetune="partial", trunk_blocks=[5]))
    with pytest.raises(ConfigError, match="tokenizer.pretrained=DIR"):
        load_tokenizer(tok_preset("tiny", kind=WAN))


def test_wan_vae_tokenizer_round_trip_and_pipeline_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root, _, vae = _pipeline_folder(tmp_path / "wan")
    cfg = tok_preset("tiny", kind=WAN, pretrained=str(root))
    assert cfg.latent_channels == 4 and cfg.downsample == 8
    tok = load_tokenizer(cfg)
    assert all(torch.equal(a, b) for a, b in zip(tok.vae.state_dict().values(), vae.state_dict().values()))
    frames = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)
    z = tok.encode(frames)
    assert z.shape == (3, *tok.latent_shape(64)) == (3, 4, 8, 8)
    img = tok.decode(z)
    assert img.shape == (3, 3, 64, 64) and img.abs().max() <= 1
    assert not any(p.requires_grad for p in tok.parameters())  # used frozen
    tok.save_pretrained(tmp_path / "tok")
    again = FrameTokenizer.from_pretrained(tmp_path / "tok")
    assert torch.equal(again.encode(frames), z) and again.fingerprint() == tok.fingerprint()
    with pytest.raises(ConfigError, match="multiple of the VAE"):
        tok.latent_shape(60)
