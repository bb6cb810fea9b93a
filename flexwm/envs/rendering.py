"""Fast offscreen MuJoCo camera rendering for the simulator environments.

One small class, `OffscreenRenderer`, renders one fixed camera of a MuJoCo model into uint8 images:

* the OpenGL backend comes from ``MUJOCO_GL`` (EGL by default, set before mujoco is imported; OSMesa when the
  EGL library is missing and OSMesa is present);
* ``fast=True`` turns off multisampling (``model.vis.quality.offsamples = 0``), shadows and reflections, which
  makes 64x64 frames several times cheaper; ``fast=False`` keeps MuJoCo's defaults (for comparisons);
* images come out the right way up: OpenGL's bottom-up rows are flipped, and a camera mounted upside down
  (its image "up" axis points below the horizon, as Meta-World's corner cameras do) is rotated by 180 degrees,
  so world "up" is image "up" and nothing is mirrored;
* `close()` frees the GL context explicitly; live renderers are also freed by an atexit hook that runs before
  EGL's own teardown, so the interpreter exits without EGL cleanup tracebacks.
"""

from __future__ import annotations

import atexit
import ctypes.util
import os
import sys
import weakref

from flexwm.errors import EnvError


def _choose_gl_backend() -> None:
    """Set MUJOCO_GL / PYOPENGL_PLATFORM before mujoco or OpenGL are imported, unless the user chose already."""
    if "MUJOCO_GL" not in os.environ:
        backend = "egl"
        if ctypes.util.find_library("EGL") is None and ctypes.util.find_library("OSMesa") is not None:
            backend = "osmesa"  # no EGL library at all: software rendering
        os.environ["MUJOCO_GL"] = backend
    if os.environ["MUJOCO_GL"].lower() in ("egl", "osmesa") and "OpenGL" not in sys.modules:
        os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"].lower())


_choose_gl_backend()

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

_LIVE: weakref.WeakSet = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def _close_all() -> None:
    for r in list(_LIVE):
        r.close()


def _gl_context(width: int, height: int):
    backend = os.environ.get("MUJOCO_GL", "egl").lower()
    errors = []
    candidates = [backend] + (["osmesa"] if backend == "egl" else [])
    for name in candidates:
        try:
            if name == "egl":
                from mujoco.egl import GLContext
            elif name == "osmesa":
                from mujoco.osmesa import GLContext
            elif name == "glfw":
                from mujoco.glfw import GLContext
            else:
                raise ImportError(f"unknown MUJOCO_GL backend {name!r}")
            ctx = GLContext(width, height)
            ctx.make_current()
            return ctx
        except Exception as e:  # noqa: BLE001 - report every backend's failure together
            errors.append(f"{name}: {type(e).__name__}: {e}")
    raise EnvError(
        "could not create an OpenGL context for offscreen rendering (" + "; ".join(errors) + "). "
        "On a headless machine set MUJOCO_GL=egl (needs libEGL and a GPU or Mesa's EGL), or "
        "MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa (needs libosmesa6), before starting Python."
    )


def camera_is_upside_down(model: mujoco.MjModel, camera_id: int) -> bool:
    """True if the camera's image "up" axis points below the horizontal plane (world z is up), in the model's
    initial configuration."""
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    mujoco.mj_camlight(model, data)
    up = data.cam_xmat[camera_id].reshape(3, 3)[:, 1]
    return bool(up[2] < 0.0)


class OffscreenRenderer:
    """Render one fixed camera of `model` into (H, W, 3) uint8 images, the right way up."""

    def __init__(self, model: mujoco.MjModel, height: int, width: int, camera: str, fast: bool = True) -> None:
        global _ATEXIT_REGISTERED
        cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if cam_id < 0:
            names = [model.camera(i).name for i in range(model.ncam)]
            raise EnvError(f"camera {camera!r} not in the model; choose one of {names}")
        self.height, self.width, self.fast = int(height), int(width), bool(fast)
        self._model = model
        # the offscreen framebuffer must be at least as large as the image
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), self.width)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), self.height)
        if fast:
            model.vis.quality.offsamples = 0  # no multisample anti-aliasing (must be set before MjrContext)
        self._ctx = _gl_context(self.width, self.height)
        self._con = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_50)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._con)
        self._scn = mujoco.MjvScene(model, maxgeom=2000)
        if fast:
            self._scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            self._scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._opt = mujoco.MjvOption()
        self._cam = mujoco.MjvCamera()
        self._cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._cam.fixedcamid = cam_id
        self._rect = mujoco.MjrRect(0, 0, self.width, self.height)
        self._buf = np.empty((self.height, self.width, 3), dtype=np.uint8)
        self.rotate_180 = camera_is_upside_down(model, cam_id)
        _LIVE.add(self)
        if not _ATEXIT_REGISTERED:
            # registered after the first GL context exists, so it runs before EGL's own atexit teardown
            atexit.register(_close_all)
            _ATEXIT_REGISTERED = True

    def _orient(self, img: np.ndarray) -> np.ndarray:
        img = img[::-1]  # OpenGL rows are bottom-up
        if self.rotate_180:
            img = img[::-1, ::-1]
        return np.ascontiguousarray(img)

    def render(self, data: mujoco.MjData) -> np.ndarray:
        if self._ctx is None:
            raise EnvError("this renderer was closed; create the environment again")
        self._ctx.make_current()
        mujoco.mjv_updateScene(self._model, data, self._opt, None, self._cam, mujoco.mjtCatBit.mjCAT_ALL,
                               self._scn)
        mujoco.mjr_render(self._rect, self._scn, self._con)
        mujoco.mjr_readPixels(self._buf, None, self._rect, self._con)
        return self._orient(self._buf)

    def render_segmentation(self, data: mujoco.MjData) -> np.ndarray:
        """(H, W) int32 map of geom ids (-1 where no geom is seen), oriented exactly like `render`."""
        flags = self._scn.flags
        flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = 1
        flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = 1
        try:
            rgb = self.render(data).astype(np.int64)
        finally:
            flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = 0
            flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = 0
        idx = rgb[..., 0] + rgb[..., 1] * 256 + rgb[..., 2] * 65536 - 1  # index into the scene's geoms
        lut = np.full(self._scn.ngeom + 1, -1, dtype=np.int32)
        for i in range(self._scn.ngeom):
            g = self._scn.geoms[i]
            if g.objtype == mujoco.mjtObj.mjOBJ_GEOM:
                lut[i] = g.objid
        idx = np.where((idx >= 0) & (idx < self._scn.ngeom), idx, self._scn.ngeom)
        return lut[idx]

    def close(self) -> None:
        if getattr(self, "_ctx", None) is None:
            return
        try:
            self._ctx.make_current()
            self._con.free()
            self._ctx.free()
        except Exception:  # noqa: BLE001 - best effort at shutdown
            pass
        self._ctx = None
        _LIVE.discard(self)

    def __del__(self) -> None:
        self.close()
