"""Two environment shims for `make lerobot-train` (LeRobot 0.4.4 next to a CPU torch 2.13 and torchvision 0.28).

Loaded at interpreter start by a .pth file in .venv-lerobot-train; LeRobot's own code is not changed. They work
around the environment only (LeRobot pins torch < 2.11 and torchvision < 0.26, whose wheels would pull CUDA torch);
nothing here concerns flexwm's datasets.

1. The torchvision 0.28 wheel on PyPI is built against CUDA torch: its compiled ops (_C.so) do not load next to a
   CPU torch, and `import torchvision` then fails in torchvision/_meta_registrations.py, which registers a fake
   kernel for `torchvision::nms` and `torchvision::qnms` without checking that the ops loaded ("operator
   torchvision::nms does not exist"). The two op schemas are declared here when the compiled ops are missing, so
   the pure-Python parts LeRobot uses (models.resnet18, ops.misc.FrozenBatchNorm2d, transforms.v2) import.
   Calling nms itself would still fail; neither ACT nor diffusion calls it.
2. torchvision 0.28 no longer has `torchvision.io.VideoReader`, which LeRobot 0.4.4's "pyav" video backend
   (datasets/video_utils.py, decode_video_frames_torchvision) calls; its other backend, torchcodec, needs FFmpeg's
   shared libraries and a torchcodec built for the installed torch. A PyAV-backed VideoReader with the interface
   that function uses (seek to the keyframe at or before a time, then iterate frames as {"data": uint8 CHW tensor,
   "pts": seconds}, `.container`) is added to torchvision.io when it is missing.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_libs = []  # keep the torch.library.Library objects alive


def _declare_missing_ops() -> None:
    import torch

    try:
        import torchvision.extension as ext  # loads _C.so when it can

        if ext._has_ops():
            return
    except Exception:  # noqa: BLE001
        pass
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for name, schema in _SCHEMAS.items():
        if not _has_schema(name):
            lib.define(schema)
    _libs.append(lib)


def _has_schema(name: str) -> bool:
    import torch

    try:
        torch._C._get_schema(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


class VideoReader:
    """torchvision.io.VideoReader's pyav backend, reduced to what LeRobot 0.4.4 calls."""

    def __init__(self, src: str, stream: str = "video", num_threads: int = 0) -> None:
        import av

        kind, _, idx = stream.partition(":")
        self._which = {kind: int(idx or 0)}
        self.container = av.open(str(src), metadata_errors="ignore")
        self._frames = self.container.decode(**self._which)

    def seek(self, time_s: float, keyframes_only: bool = False) -> VideoReader:
        s = self.container.streams.get(**self._which)[0]
        self.container.seek(int(round(max(time_s, 0.0) / s.time_base)), backward=True, any_frame=False, stream=s)
        self._frames = self.container.decode(**self._which)
        return self

    def __iter__(self) -> VideoReader:
        return self

    def __next__(self) -> dict:
        import torch

        frame = next(self._frames)
        return {"data": torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1),
                "pts": float(frame.pts * frame.time_base)}


class _Finder(importlib.abc.MetaPathFinder):
    """Runs the shims around the first import of torchvision and torchvision.io."""

    def find_spec(self, name, path=None, target=None):
        if name not in ("torchvision", "torchvision.io"):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def run(module):
            if name == "torchvision":
                # torchvision/__init__ imports .extension (which loads _C.so when it can) before
                # _meta_registrations; this does the same, then declares what _C.so did not
                _declare_missing_ops()
            exec_module(module)
            if name == "torchvision.io" and not hasattr(module, "VideoReader"):
                module.VideoReader = VideoReader

        spec.loader.exec_module = run
        return spec


sys.meta_path.insert(0, _Finder())
