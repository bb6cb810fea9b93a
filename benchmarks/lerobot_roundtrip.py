"""Round trip between flexwm and LeRobot's own dataset code (lerobot-dataset 0.4.4 = lerobot 0.4.4's datasets/).
Not part of the test suite (it needs LeRobot in a separate environment): `make lerobot-roundtrip` builds that
environment (.venv-lerobot) and runs this script. The set-up it makes, CPU torch reused from flexwm's venv so
nothing downloads CUDA torch:

    python -m venv .venv-lerobot
    echo /path/to/flexwm/.venv/lib/python3.11/site-packages > .venv-lerobot/lib/python3.11/site-packages/zz_flexwm.pth
    # a torchvision stub (torchvision's compiled ops do not load next to a CPU torch 2.13; only the names
    # `torchvision.transforms.ToTensor` and `torchvision.set_video_backend` are imported): benchmarks/lerobot_stub
    echo $PWD/benchmarks/lerobot_stub > .venv-lerobot/lib/python3.11/site-packages/aa_stub.pth
    .venv-lerobot/bin/pip install lerobot-dataset==0.4.4
    PYTHONPATH=. .venv-lerobot/bin/python benchmarks/lerobot_roundtrip.py runs/lerobot-roundtrip

Checks: (1) LeRobot opens a flexwm dataset: same actions, states, tasks and frames; stats for every policy
feature with q01..q99, image stats (3, 1, 1); flexwm.env_state is not a policy feature; and the same
episodes written with a small file-size bound (several packed data and video files). (2) LeRobot writes a
packed two-camera AV1 dataset; flexwm reads it (camera must be chosen), frames and actions match, verify is
clean. (3) LeRobot's delete_episodes on a flexwm dataset; flexwm reads the result (LeRobot drops flexwm's
metadata columns; the outcome survives in the data column flexwm.outcome).

LeRobot decodes video with torchcodec or torchvision.io.VideoReader; neither is installable here next to a CPU
torch, so frames are compared through a PyAV decoder that follows LeRobot's own rule (seek to the keyframe
before the first queried timestamp, keep the frame closest to each timestamp within tolerance_s)."""

import json
import shutil
import sys
from pathlib import Path

import av
import ledataset
import ledataset.datasets.lerobot_dataset as lrd
import ledataset.datasets.utils
import ledataset.datasets.video_utils as vu
import numpy as np
import torch
from ledataset.datasets.dataset_tools import delete_episodes
from ledataset.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
from ledataset.datasets.utils import dataset_to_policy_features

# lerobot-dataset 0.4.4's dataset_tools._write_parquet still imports `lerobot.datasets.utils`: alias the package
sys.modules.update(
    {"lerobot": ledataset, "lerobot.datasets": ledataset.datasets, "lerobot.datasets.utils": ledataset.datasets.utils}
)

from flexwm.data import FlexDataset, dataset_info, verify  # noqa: E402
from tests.helpers.synth_data import make_episode, write_episodes  # noqa: E402


def pyav_decode(video_path, timestamps, tolerance_s, backend=None):
    with av.open(str(video_path)) as c:
        s = c.streams.video[0]
        c.seek(int(min(timestamps) / s.time_base), stream=s, backward=True, any_frame=False)
        frames, ts = [], []
        for f in c.decode(s):
            t = float(f.pts * s.time_base)
            frames.append(f.to_ndarray(format="rgb24"))
            ts.append(t)
            if t >= max(timestamps):
                break
    ts = np.asarray(ts)
    out = []
    for q in timestamps:
        k = int(np.argmin(np.abs(ts - q)))
        assert abs(ts[k] - q) < tolerance_s, (q, ts[k])
        out.append(torch.from_numpy(frames[k]).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


vu.decode_video_frames = pyav_decode
lrd.decode_video_frames = pyav_decode
base = Path(sys.argv[1])
shutil.rmtree(base, ignore_errors=True)
base.mkdir(parents=True)
report = {}

# 1. flexwm writes; LeRobot reads metadata, stats, policy features and every frame
A = base / "flexwm_written"
write_episodes(A, range(5))
meta = LeRobotDatasetMetadata("local/flexwm", root=A)
pf = dataset_to_policy_features(meta.features)
assert "flexwm.env_state" not in pf and "observation.env_state" not in pf, pf
for key in pf:  # what lerobot-train's normaliser looks up
    for s in ("min", "max", "mean", "std", "q01", "q10", "q50", "q90", "q99"):
        assert s in meta.stats[key], (key, s)
assert tuple(meta.stats["observation.images.main"]["mean"].shape) == (3, 1, 1)
ds = LeRobotDataset("local/flexwm", root=A, video_backend="pyav")
fx = FlexDataset(A)
worst = 0.0
for i in range(len(fx)):
    ep = fx.load_episode(i)
    start = fx.episodes[i]["dataset_from_index"]
    for t in range(ep.length):
        item = ds[start + t]
        assert np.array_equal(item["action"].numpy(), ep.actions[t])
        assert np.array_equal(item["observation.state"].numpy(), ep.proprio[t])
        assert item["task"] == ep.meta.instruction
        img = (item["observation.images.main"].permute(1, 2, 0).numpy() * 255).round()
        worst = max(worst, float(np.abs(img - ep.frames[t]).max()))
report["lerobot_reads_flexwm"] = {"frames": len(ds), "policy_features": sorted(pf), "max_abs_frame_diff": worst}
assert worst <= 1.0  # the same decoded pixels (up to float rounding)

# 1b. the same episodes packed into several files (a small size bound; A fits in one): LeRobot reads the same values
P = base / "flexwm_packed"
write_episodes(P, range(5), data_files_size_in_mb=0.02, video_files_size_in_mb=0.02)
assert len(list((P / "data").rglob("*.parquet"))) >= 2
dp = LeRobotDataset("local/packed", root=P, video_backend="pyav")
assert len(dp) == len(ds)
fp = FlexDataset(P)
packed_frames = np.concatenate([fp.load_episode(i).frames for i in range(len(fp))])
worst_packed = 0.0
for k in range(len(dp)):
    a, b = ds[k], dp[k]
    assert np.array_equal(a["action"].numpy(), b["action"].numpy()) and a["task"] == b["task"]
    # LeRobot decodes the packed files to the pixels flexwm decodes from them (x264 is not bit-reproducible
    # across encoder sessions, so the two datasets' videos are compared through their readers, not to each other)
    img = (b["observation.images.main"].permute(1, 2, 0).numpy() * 255).round()
    worst_packed = max(worst_packed, float(np.abs(img - packed_frames[k]).max()))
assert worst_packed <= 1.0, worst_packed
report["lerobot_reads_flexwm_packed"] = {"frames": len(dp), "data_files": len(list((P / "data").rglob("*.parquet"))),
                                        "max_abs_frame_diff": worst_packed}

# 2. LeRobot writes a packed dataset (AV1, two cameras); flexwm reads it
B = base / "lerobot_written"
feats = {
    "observation.images.top": {"dtype": "video", "shape": (48, 64, 3), "names": ["height", "width", "channels"]},
    "observation.images.wrist": {"dtype": "video", "shape": (48, 64, 3), "names": ["height", "width", "channels"]},
    "observation.state": {"dtype": "float32", "shape": (6,), "names": None},
    "action": {"dtype": "float32", "shape": (4,), "names": None},
}
lr = LeRobotDataset.create("local/so100", fps=10, features=feats, root=B, robot_type="so100")
want = []
rng = np.random.default_rng(0)
for e in range(4):
    T = 8 + e
    acts = rng.normal(size=(T, 4)).astype(np.float32)
    top = np.clip(
        np.linspace(0, 255, 64)[None, None, :, None]
        + 12 * np.arange(T)[:, None, None, None]
        + 0 * np.zeros((T, 48, 64, 3)),
        0,
        255,
    ).astype(np.uint8)
    top[:, :8] = (10 + 6 * (e * 5 + np.arange(T)) % 240)[:, None, None, None]
    for t in range(T):
        lr.add_frame(
            {
                "observation.images.top": top[t],
                "observation.images.wrist": 255 - top[t],
                "observation.state": np.full(6, e + t / 10, np.float32),
                "action": acts[t],
                "task": ["pick the cube", "place the cube"][e % 2],
            }
        )
    lr.save_episode()
    want.append((acts, top))
lr.finalize()
try:
    FlexDataset(B)
    raise AssertionError("two cameras need --camera")
except Exception as err:
    assert "choose one with --camera" in str(err), err
fb = FlexDataset(B, camera="observation.images.top")
info = dataset_info(B, camera="observation.images.top")
errs = []
for e, (acts, top) in enumerate(want):
    ep = fb.load_episode(e)
    assert np.array_equal(ep.actions, acts)
    errs.append(float(np.abs(ep.frames.astype(int) - top.astype(int)).mean()))
    band = ep.frames[:, 2:6].mean(axis=(1, 2, 3))
    assert np.allclose(band, (10 + 6 * (e * 5 + np.arange(len(acts))) % 240), atol=4), (e, band)
v = verify(B, camera="observation.images.wrist")
assert v["damaged"] == [] and v["ok"] == 4, v
report["flexwm_reads_lerobot"] = {
    "episodes_per_data_file": sorted(set(int(x["data/file_index"]) for x in fb.episodes)),
    "codec": info
    and json.loads((B / "meta/info.json").read_text())["features"]["observation.images.top"]["info"]["video.codec"],
    "mean_abs_frame_err": errs,
    "info_outcomes": info["by_outcome"],
    "cameras": info["cameras"],
    "tasks": info["tasks"],
}

# 3. LeRobot's delete_episodes on a flexwm dataset; flexwm reads the result
C = base / "flexwm_edited"
delete_episodes(
    LeRobotDataset("local/flexwm", root=A, video_backend="pyav"), [1, 3], output_dir=C, repo_id="local/edited"
)
fc = FlexDataset(C)
kept = [0, 2, 4]
for k, i in enumerate(kept):
    np.testing.assert_array_equal(fc.load_episode(k).actions, make_episode(i).actions)
assert [e["outcome"] for e in fc.episodes] == [make_episode(i).meta.outcome for i in kept]
report["flexwm_reads_lerobot_edited"] = {
    "episodes": len(fc),
    "flexwm_layout": fc.flexwm_layout,
    "outcomes": [e["outcome"] for e in fc.episodes],
    "verify_damaged": verify(C)["damaged"],
}
print(json.dumps(report, indent=1))
