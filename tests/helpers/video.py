"""Counting what flexwm's video reader decodes (to test that a read seeks instead of decoding from the start)."""

from __future__ import annotations

import types

import av


def count_decoded_frames(monkeypatch) -> list:
    """Patch flexwm.data.video's PyAV so every decoded frame's pts is appended to the returned list."""
    from flexwm.data import video as video_mod

    decoded: list = []

    class Counting:
        def __init__(self, container):
            self._c = container

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._c.close()

        def __getattr__(self, name):
            return getattr(self._c, name)

        def decode(self, *args, **kwargs):
            for frame in self._c.decode(*args, **kwargs):
                decoded.append(frame.pts)
                yield frame

    monkeypatch.setattr(video_mod, "av", types.SimpleNamespace(open=lambda *a, **k: Counting(av.open(*a, **k))))
    return decoded
