"""Pack a flexwm dataset the way LeRobot lays datasets out: many episodes per data parquet and per mp4.

flexwm collects one episode per file (each episode is complete and crash-safe the moment its metadata file is
renamed into place). A dataset to publish or to train on with LeRobot is better packed: thousands of episodes
in a few files. `pack_dataset(src, dst)` writes the packed copy into a temporary directory next to `dst` and
renames it to `dst` when complete, so a kill leaves either no `dst` or a whole one (a stale temporary
directory is removed by the next attempt). Videos are remuxed, not re-encoded: the packed frames are the
same pixels. flexwm's labels, statistics and per-file checksums (of the packed files) are kept; the packed
copy is read by FlexDataset and by LeRobot, but flexwm does not append to it (collect into the source and
pack again).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from flexwm.data.lerobot import (
    CHUNKS_SIZE,
    DATA_FILES_SIZE_IN_MB,
    DATA_SHA_COLUMN,
    INFO_PATH,
    STATS_PATH,
    TASKS_PATH,
    VIDEO_KEY,
    VIDEO_SHA_COLUMN,
    data_path,
    episode_meta_path,
    video_path,
)
from flexwm.data.reader import FlexDataset
from flexwm.data.video import concat_videos
from flexwm.errors import DatasetError
from flexwm.io import atomic_write, atomic_write_json, sha256_file


def _groups(ds: FlexDataset, episodes_per_file: int | None, file_size_mb: float) -> list[list[int]]:
    """Consecutive episodes per packed file: at most `episodes_per_file`, and about `file_size_mb` of data+video."""
    out: list[list[int]] = [[]]
    size = 0
    for i in range(len(ds)):
        n = ds._data_file(i).stat().st_size + ds._video_file(i).stat().st_size
        full = episodes_per_file is not None and len(out[-1]) >= episodes_per_file
        if out[-1] and (full or size + n > file_size_mb * 2**20):
            out.append([])
            size = 0
        out[-1].append(i)
        size += n
    return out if out[0] else []


def pack_dataset(src: str | Path, dst: str | Path, *, episodes_per_file: int | None = None,
                 file_size_mb: float = DATA_FILES_SIZE_IN_MB) -> Path:
    """Write a packed copy of flexwm dataset `src` at `dst` (which must not exist). Returns `dst`."""
    ds = FlexDataset(src)
    dst = Path(dst)
    if not ds.flexwm_layout:
        raise DatasetError(f"{ds.root} is not in flexwm's one-episode-per-file layout (already packed, or written by "
                           "LeRobot); pack the dataset flexwm collected")
    if dst.exists():
        raise DatasetError(f"{dst} exists; choose a new directory for the packed dataset")
    damaged = [i for i in range(len(ds)) if not _intact(ds, i)]
    if damaged:
        raise DatasetError(f"{ds.root}: episodes {damaged[:8]} are damaged; run `flexwm data verify {ds.root}`")
    tmp = dst.parent / f".{dst.name}.packing.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted attempt
    tmp.mkdir(parents=True)
    try:
        _write_packed(ds, tmp, episodes_per_file, file_size_mb)
        os.replace(tmp, dst)  # the packed dataset appears whole, or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fd = os.open(dst.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return dst


def _write_packed(ds: FlexDataset, tmp: Path, episodes_per_file: int | None, file_size_mb: float) -> None:
    metas = []
    for i in range(len(ds)):
        table = pq.read_table(episode_meta_path(ds.root, i // CHUNKS_SIZE, i % CHUNKS_SIZE))
        metas.append(table.to_pylist()[0])
    schema = table.schema
    for f, group in enumerate(_groups(ds, episodes_per_file, file_size_mb)):
        chunk, file = f // CHUNKS_SIZE, f % CHUNKS_SIZE
        data = pa.concat_tables([pq.read_table(ds._data_file(i)) for i in group])
        atomic_write(data_path(tmp, chunk, file),
                     lambda p, t=data: pq.write_table(t, p, compression="snappy", write_page_checksum=True))
        starts: list[float] = []
        atomic_write(video_path(tmp, chunk, file),
                     lambda p, g=group, s=starts: s.extend(concat_videos([ds._video_file(i) for i in g], p, ds.fps)))
        data_sha, video_sha = sha256_file(data_path(tmp, chunk, file)), sha256_file(video_path(tmp, chunk, file))
        rows = []
        for i, start in zip(group, starts):
            r = dict(metas[i])
            r.update({"data/chunk_index": chunk, "data/file_index": file,
                      f"videos/{VIDEO_KEY}/chunk_index": chunk, f"videos/{VIDEO_KEY}/file_index": file,
                      f"videos/{VIDEO_KEY}/from_timestamp": start,
                      f"videos/{VIDEO_KEY}/to_timestamp": start + int(r["length"]) / ds.fps,
                      "meta/episodes/chunk_index": chunk, "meta/episodes/file_index": file,
                      DATA_SHA_COLUMN: data_sha, VIDEO_SHA_COLUMN: video_sha})
            rows.append(r)
        meta = pa.Table.from_pylist(rows, schema=schema)
        atomic_write(episode_meta_path(tmp, chunk, file), lambda p, t=meta: pq.write_table(t, p))
    for rel in (TASKS_PATH, STATS_PATH):
        atomic_write(tmp / rel, lambda p, s=ds.root / rel: shutil.copyfile(s, p))
    info = json.loads((ds.root / INFO_PATH).read_text())
    info.update(total_episodes=len(ds), total_frames=ds.num_frames, total_tasks=len(ds.task_list()),
                splits={"train": f"0:{len(ds)}"} if len(ds) else {})
    info["flexwm"] = {**info["flexwm"], "episodes_per_file": None, "packed": True}
    atomic_write_json(tmp / INFO_PATH, info)


def _intact(ds: FlexDataset, i: int) -> bool:
    try:
        ds._read(i)
        return True
    except DatasetError:
        return False
