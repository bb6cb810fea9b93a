"""End-to-end smoke test on the real simulator: collect -> train -> resume -> load -> imagine, through the CLI."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

ENV = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "HF_HUB_OFFLINE": "1"}


def flexwm(*args, timeout=600):
    r = subprocess.run([sys.executable, "-m", "flexwm.cli", *map(str, args)], env=ENV, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, f"flexwm {' '.join(map(str, args))} failed:\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.mark.slow
def test_collect_train_resume_imagine(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    flexwm("collect", "--tasks", "reach-v3,button-press-v3", "--source", "expert,noisy,play", "--episodes", "2",
           "--noise", "1.0", "--max-steps", "24", "--workers", "2", "--out", data)
    info = json.loads(flexwm("data", "info", data, "--json"))
    assert info["episodes"] == 12
    flexwm("data", "preview", data)
    assert (data / "preview.mp4").stat().st_size > 0

    flexwm("train", "--data", data, "--preset", "tiny", "--out", run, "--set", "train.steps=12",
           "--set", "train.ckpt_every=6")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 12 and np.isfinite(rows[-1]["loss"])
    # continuing a finished run to more steps picks up from its checkpoint
    flexwm("train", "--data", data, "--preset", "tiny", "--out", run, "--set", "train.steps=18",
           "--set", "train.ckpt_every=6", "--resume")
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    assert ckpts[-1] == "step-00000018"

    out = flexwm("eval", "--ckpt", run, "--tasks", "reach-v3", "--policy", "wam", "--episodes", "2",
                 "--max-steps", "8", "--flow-steps", "2", "--out", tmp_path / "eval.json")
    res = json.loads((tmp_path / "eval.json").read_text())
    assert res["pooled"]["episodes"] == 2 and "reach-v3" in out
    assert res["per_task"]["reach-v3"]["latency"]["decisions"] >= 2
    assert res["budget"] == "cpu" and res["flow_steps"] == 2  # --budget auto on a CPU; explicit flow steps win
    for bad, msg in ((["--budget", "fast"], "not a planning budget"), (["--device", "cuda"], "no GPU")):
        if bad[0] == "--device" and torch.cuda.is_available():
            continue
        r = subprocess.run([sys.executable, "-m", "flexwm.cli", "eval", "--ckpt", str(run), "--tasks", "reach-v3",
                            "--episodes", "1", "--out", str(tmp_path / "bad.json"), *bad], env=ENV,
                           capture_output=True, text=True)
        assert r.returncode != 0 and msg in r.stderr, r.stderr[-500:]

    # an evaluation killed after its first task resumes to the same result as an uninterrupted one
    ev = ["eval", "--ckpt", run, "--tasks", "reach-v3,button-press-v3", "--policy", "random", "--episodes", "2",
          "--max-steps", "30"]
    flexwm(*ev, "--out", tmp_path / "ref.json")
    killed = tmp_path / "killed.json"
    proc = subprocess.Popen([sys.executable, "-m", "flexwm.cli", *map(str, ev), "--out", killed], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not killed.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = json.loads(killed.read_text())
    assert partial["complete"] is False and list(partial["per_task"]) == ["reach-v3"]
    assert "--resume" in subprocess.run([sys.executable, "-m", "flexwm.cli", *map(str, ev), "--out", killed],
                                        env=ENV, capture_output=True, text=True).stderr
    flexwm(*ev, "--out", killed, "--resume")
    ref, got = json.loads((tmp_path / "ref.json").read_text()), json.loads(killed.read_text())
    assert got["complete"] and ref["pooled"] == got["pooled"]
    for t in ("reach-v3", "button-press-v3"):
        assert ref["per_task"][t]["success"] == got["per_task"][t]["success"]

    # the behaviour-cloning baseline: trained by its own command, evaluated by the same eval command
    bc, demos = tmp_path / "bc", tmp_path / "demos"  # 24-step episodes hold no successes: collect 2 that do
    flexwm("collect", "--tasks", "reach-v3", "--source", "expert", "--episodes", "2", "--max-steps", "60",
           "--workers", "1", "--out", demos)
    r = subprocess.run([sys.executable, "-m", "flexwm.cli", "train-bc", "--data", data, "--preset", "tiny",
                        "--out", bc], env=ENV, capture_output=True, text=True)
    assert r.returncode != 0 and "no success episodes" in r.stderr
    out = json.loads(flexwm("train-bc", "--data", demos, "--preset", "tiny", "--out", bc, "--steps", "120",
                            "--batch-size", "8", "--heldout-every", "0", "--no-proprio", "--save-at", "60"))
    info = json.loads((bc / "train_info.json").read_text())
    assert info["snapshots"] == ["step-000060"] and (bc / "step-000060" / "model.safetensors").exists()
    from flexwm.planning import BCModel
    snap, final = BCModel.from_pretrained(bc / "step-000060"), BCModel.from_pretrained(bc)
    assert any(not torch.equal(a, b) for a, b in zip(snap.state_dict().values(), final.state_dict().values()))
    assert out["episodes"] == info["episodes"] == len(info["train_episodes"]) > 0
    assert info["loss_last_50"] < info["loss_first_50"]  # it learns something in 120 steps
    r = subprocess.run([sys.executable, "-m", "flexwm.cli", "train-bc", "--data", demos, "--preset", "tiny",
                        "--out", bc], env=ENV, capture_output=True, text=True)
    assert r.returncode != 0 and "already holds a BC model" in r.stderr
    flexwm("eval", "--ckpt", bc, "--tasks", "reach-v3", "--policy", "bc", "--episodes", "2", "--max-steps", "8",
           "--out", tmp_path / "bc.json")
    res = json.loads((tmp_path / "bc.json").read_text())
    assert res["pooled"]["episodes"] == 2 and res["per_task"]["reach-v3"]["policy"] == "bc"
    # ... and improved by RL in imagination (one tiny iteration: the plumbing, not the gain; see tests/rl)
    out = json.loads(flexwm("improve", "--bc", bc, "--ckpt", run, "--task", "reach-v3", "--out", tmp_path / "bc-rl",
                            "--set", "iterations=1", "--set", "starts=2", "--set", "samples=2", "--set", "max_steps=8",
                            "--set", "updates=2", "--flow-steps", "2"))
    log = json.loads((tmp_path / "bc-rl" / "improve_log.json").read_text())
    assert log["backend"] == "imagination" and len(out["mean_return_per_iteration"]) == 1
    # ... or from short imagined branches off the dataset's real frames, scored by the progress head
    out = json.loads(flexwm("improve", "--bc", bc, "--ckpt", run, "--task", "reach-v3", "--out", tmp_path / "bc-br",
                            "--data", data, "--set", "start=dataset", "--set", "reward=progress", "--set", "branch=2",
                            "--set", "iterations=1", "--set", "starts=2", "--set", "samples=2", "--set", "updates=2",
                            "--flow-steps", "2"))
    assert len(out["mean_return_per_iteration"]) == 1 and 0.0 <= out["mean_return_per_iteration"][0] <= 1.0
    r = subprocess.run([sys.executable, "-m", "flexwm.cli", "improve", "--bc", bc, "--task", "reach-v3", "--out",
                        tmp_path / "x", "--ckpt", run, "--real"], env=ENV, capture_output=True, text=True)
    assert r.returncode != 0 and "not both" in r.stderr

    suite = tmp_path / "suite.yaml"
    suite.write_text("policies:\n  - {name: expert, kind: expert}\n  - {name: noisy, kind: noisy, noise: 1.5}\n"
                     "  - {name: random, kind: random}\n")
    out = flexwm("evaluate-policies", "--ckpt", run, "--suite", suite, "--task", "reach-v3", "--episodes", "2",
                 "--horizon", "8", "--flow-steps", "2", "--out", tmp_path / "pe")
    assert "mmrv" in out and (tmp_path / "pe" / "policy_eval.png").exists()
    # every episode's imagined P(success) after every imagined frame is saved, and the imagined outcome is its
    # maximum above the threshold (so other thresholds can be scored without re-running)
    saved = json.loads((tmp_path / "pe" / "policy_eval.json").read_text())
    for pol in saved["policies"]:
        trace = pol["episodes"]["imagined_prob"]
        assert len(trace) == 2 and all(len(t) == saved["imagined_frames"] for t in trace)
        assert pol["imagined"]["successes"] == sum(max(t) > saved["success_threshold"] for t in trace)
        assert [bool(x) for x in pol["episodes"]["real_success"]].count(True) == pol["real"]["successes"]
    # calibrated thresholds need `flexwm calibrate`, which needs held-out episodes of both outcomes
    pe = ["evaluate-policies", "--ckpt", run, "--suite", suite, "--task", "reach-v3", "--episodes", "1", "--horizon",
          "8", "--flow-steps", "2", "--out", tmp_path / "pe2", "--success-threshold"]
    for value, msg in (("calibrated", "flexwm calibrate"), ("1.5", "number in [0, 1]")):
        r = subprocess.run([sys.executable, "-m", "flexwm.cli", *map(str, pe), value], env=ENV, capture_output=True,
                           text=True)
        assert r.returncode != 0 and msg in r.stderr, r.stderr[-500:]
    r = subprocess.run([sys.executable, "-m", "flexwm.cli", "calibrate", "--ckpt", str(run), "--flow-steps", "2"],
                       env=ENV, capture_output=True, text=True)  # 24-step episodes: no successes held out
    assert r.returncode != 0 and "both successes and failures" in r.stderr, r.stderr[-500:]

    from flexwm.data import FlexDataset
    from flexwm.inference import load_run

    wm = load_run(run)
    ep = FlexDataset(data).load_episode(0)
    with torch.no_grad():
        state = wm.encode(ep.frames[None, :1], ep.proprio[None, 0])
        fut = wm.rollout(state, torch.from_numpy(ep.actions[None, :8]), generator=torch.Generator().manual_seed(0))
        frames = wm.decode(fut)
    assert frames.shape == (1, 8 // wm.frame_stride, 64, 64, 3) and frames.dtype == torch.uint8
