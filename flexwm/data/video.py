"""Encode and decode episode videos with PyAV: h264 (libx264, crf 18), yuv420p, one frame per step.

Round-trip error measured by tests/data/test_data_lerobot.py (mean abs error in grey levels / PSNR):
  64x64 smooth moving gradient      1.65 / 41.8 dB   (crf 0: 1.44 / 43.1 dB)
  64x64 flat scene, sharp colour boxes 2.40 / 32.7 dB (up to ~80 on box edges)
  32x32 steeper gradient            2.3-2.4 / 38.5-38.8 dB
Most of the error is yuv420p chroma subsampling (half-resolution colour), not the crf: lowering crf barely
helps; sharp coloured edges are what suffers.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from flexwm.data.lerobot import VIDEO_CRF, VIDEO_ENCODER, VIDEO_PIX_FMT


def encode_video(frames: np.ndarray, path: str | Path, fps: int, crf: int = VIDEO_CRF) -> None:
    """Write uint8 (T, H, W, 3) frames as an mp4 at `path` (any file name: the container is forced to mp4).

    yuv420p needs even sizes: odd heights/widths are padded by repeating the last row/column and cropped
    again by `decode_video(..., size=(H, W))`.
    """
    # tiny frames: encoder threads cost more than they give
    encode_frames(frames, str(path), container_format="mp4", codec=VIDEO_ENCODER, rate=Fraction(int(fps), 1),
                  options={"crf": str(crf), "preset": "medium"}, thread_count=1)


def encode_frames(frames: np.ndarray, target: Any, *, container_format: str, codec: str, rate: Any,
                  options: dict[str, str], thread_count: int | None = None) -> None:
    """Encode uint8 (T, H, W, 3) frames in yuv420p into `target` (a path or a writable file object), padding
    odd heights/widths by repeating the last row/column (yuv420p needs even sizes)."""
    frames = np.asarray(frames)
    t, h, w, _ = frames.shape
    ph, pw = h + h % 2, w + w % 2
    if (ph, pw) != (h, w):
        frames = np.pad(frames, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    with av.open(target, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = pw, ph, VIDEO_PIX_FMT
        stream.options = options
        if thread_count is not None:
            stream.codec_context.thread_count = thread_count
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decode_video(path: str | Path, size: tuple[int, int] | None = None, from_timestamp: float = 0.0,
                 to_timestamp: float | None = None, max_frames: int | None = None,
                 resize: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an mp4 to uint8 (T, H, W, 3): the frames with from_timestamp <= ts < to_timestamp (half a frame
    period of tolerance), at most `max_frames` of them.

    A file holding many episodes (as LeRobot packs them) is entered by seeking to the last keyframe at or
    before `from_timestamp`, so reading an episode decodes at most one group of pictures before it, not the
    file from its start; decoding stops once the episode's frames are read. Any codec the ffmpeg build inside
    PyAV decodes works (h264, AV1, ...). `size` = (H, W) crops the padding `encode_video` added to odd sizes;
    `resize` = (H, W) instead scales each whole decoded frame to that size (area averaging when shrinking).
    Raises the decoder's own errors (av.FFmpegError, OSError), and ValueError when the stream's frames are not
    of `size` (a stored size of metadata that does not describe the video would otherwise crop it silently);
    the dataset reader turns them into a DatasetError naming the episode.
    """
    out = []
    with av.open(str(path), mode="r") as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        tb = stream.time_base
        half = 0.5 / float(stream.average_rate or stream.guessed_rate or 1)  # tolerance: half a frame period
        if from_timestamp > half and tb:
            container.seek(max(int((from_timestamp - half) / tb), 0), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if size is not None and (frame.height, frame.width) not in (tuple(size), _even(size)):
                raise ValueError(f"{path} holds {frame.height}x{frame.width} frames (H x W), not the "
                                 f"{size[0]}x{size[1]} its metadata gives")
            ts = float(frame.pts * tb) if frame.pts is not None else len(out) * 2 * half
            if ts < from_timestamp - half:
                continue
            if to_timestamp is not None and ts >= to_timestamp - half:
                break
            if resize is None:
                out.append(frame.to_ndarray(format="rgb24"))
            else:
                out.append(frame.to_ndarray(format="rgb24", width=resize[1], height=resize[0], interpolation="AREA"))
            if max_frames is not None and len(out) >= max_frames:
                break
    if not out:
        return np.zeros((0, *(resize or size or (0, 0)), 3), np.uint8)
    arr = np.stack(out)
    if size is not None and resize is None:
        arr = arr[:, : size[0], : size[1]]
    return arr


def _even(size: tuple[int, int]) -> tuple[int, int]:
    """The size `encode_video` stores frames of `size` at (odd sides padded by one)."""
    return int(size[0]) + int(size[0]) % 2, int(size[1]) + int(size[1]) % 2


def concat_videos(sources: list[Path], target: Path, fps: int) -> list[float]:
    """Concatenate mp4s of one encoding (flexwm's: same codec, size and settings) into `target` without decoding;
    returns each source's start time in the result (seconds)."""
    starts: list[float] = []
    with av.open(str(target), mode="w", format="mp4") as out:
        ostream = None
        offset = Fraction(0)
        for src in sources:
            with av.open(str(src)) as inp:
                istream = inp.streams.video[0]
                if ostream is None:
                    ostream = out.add_stream_from_template(istream)
                tb = istream.time_base
                shift = round(offset / tb)
                starts.append(float(offset))
                n = 0
                for packet in inp.demux(istream):
                    if packet.dts is None:  # the demuxer's final empty packet
                        continue
                    packet.pts = None if packet.pts is None else packet.pts + shift
                    packet.dts += shift
                    packet.stream = ostream
                    out.mux(packet)
                    n += 1
                offset += Fraction(istream.frames or n, fps)
    return starts
