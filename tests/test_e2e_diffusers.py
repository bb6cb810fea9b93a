"""End-to-end with the diffusers backbone on the real simulator: a tiny random Wan transformer + VAE saved as a
local pipeline folder -> collect -> train (LoRA, configured by --set overrides) -> resume -> load -> propose ->
AC rollout -> plan -> evaluate a couple of short Meta-World episodes -> export -> load the exported folder."""

import json

import numpy as np
import pytest
import torch
from gymnasium import spaces

pytest.importorskip("metaworld")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("peft")


@pytest.mark.slow
def test_wan_backbone_train_load_propose_rollout_plan_evaluate(tmp_path, monkeypatch):
    from flexwm.collect import collect_dataset
    from flexwm.data import FlexDataset
    from flexwm.evaluation.simulator import evaluate_policy
    from flexwm.inference import export, load_run
    from flexwm.models.video_backbone import TINY_CONFIGS
    from flexwm.models.video_vae import TINY_VAE_CONFIGS
    from flexwm.planning import make_policy
    from flexwm.training.run import run_config, train_world_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MUJOCO_GL", "egl")
    torch.set_num_threads(1)
    # the user's weights: a pipeline folder downloaded ahead of time (here a tiny random one)
    wan = tmp_path / "wan"
    torch.manual_seed(0)
    transformer = diffusers.WanTransformer3DModel(**TINY_CONFIGS["diffusers:wan"])
    transformer.save_pretrained(wan / "transformer")
    diffusers.AutoencoderKLWan(**TINY_VAE_CONFIGS["diffusers:wan"]).save_pretrained(wan / "vae")

    data, run = tmp_path / "data", tmp_path / "run"
    collect_dataset(data, tasks="reach-v3", sources=["expert", "play"], episodes=2, max_steps=16, progress=False)
    sets = ["model.backbone=diffusers:wan", f"model.pretrained={wan}", "model.trunk_finetune=lora",
            "model.lora_rank=4", "tokenizer.kind=diffusers:wan", f"tokenizer.pretrained={wan}",
            "train.steps=6", "train.ckpt_every=3", "train.log_every=3"]
    cfg = run_config("tiny", data=[str(data)], overrides=sets)
    assert (cfg.model.d_model, cfg.model.patch_size, cfg.model.backbone_config["num_layers"]) == (32, 2, 2)
    train_world_model(cfg, run, progress=False, until=3)
    train_world_model(cfg, run, progress=False, resume=True)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6] and all(np.isfinite(r["loss"]) for r in rows)
    saved = json.loads((run / "run_config.json").read_text())
    assert saved["model"]["backbone"] == "diffusers:wan" and saved["tokenizer"]["kind"] == "diffusers:wan"

    wm = load_run(run, steps=2)
    assert type(wm.model.trunk.transformer).__name__ == "WanTransformer3DModel"
    # the LoRA run left the pretrained weights untouched
    base = {k.replace(".base_layer", ""): v for k, v in wm.model.trunk.transformer.state_dict().items()
            if "lora_" not in k}
    assert all(torch.equal(base[k], v) for k, v in transformer.state_dict().items())
    ep = FlexDataset(data).load_episode(0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        state = wm.encode(ep.frames[None, :1], ep.proprio[None, 0])
        acts, lat = wm.propose(state, "reach the goal", n=2, generator=g)
        fut = wm.rollout(state, torch.from_numpy(ep.actions[None, :8]), generator=g)
        p, progress = wm.score(state, lat[:, 0], "reach the goal")
        frames = wm.decode(fut)
    assert acts.shape == (1, 2, wm.horizon, 4) and torch.isfinite(acts).all()
    assert fut.shape == (1, 8 // wm.frame_stride, 4, 8, 8) and frames.shape[-3:] == (64, 64, 3)
    assert ((p >= 0) & (p <= 1)).all()

    box = spaces.Box(-1.0, 1.0, (4,), np.float32)
    for name in ("wam", "cem"):
        policy = make_policy(name, wm, action_space=box, budget="tiny")
        out = evaluate_policy(policy, "metaworld", "reach-v3", episodes=2, seed=0, max_steps=4)
        assert out["episodes"] == 2 and len(out["per_episode"]) == 2 and out["latency"]["decisions"] >= 2

    # an exported folder is self-contained: it loads after the pipeline folder is gone
    import shutil

    export(run, tmp_path / "exported")
    shutil.rmtree(wan)
    again = load_run(tmp_path / "exported", steps=2)
    with torch.no_grad():
        a2, _ = again.propose(again.encode(ep.frames[None, :1], ep.proprio[None, 0]), "reach the goal", n=2,
                              generator=torch.Generator().manual_seed(1))
        a1, _ = wm.propose(state, "reach the goal", n=2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a1, a2)
