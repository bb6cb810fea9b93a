"""Byte-level damage shared by the property tests of flexwm's reader and the plain LeRobot reader."""

from __future__ import annotations

from pathlib import Path


def damage_bytes(path: Path, name: str, pick: int, x: float) -> bool:
    """Apply byte damage `name` to `path`: truncate to a fraction x, flip bits at position x, or delete the file.
    Returns False when `name` is not a byte-level damage (the caller applies its own)."""
    if name == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * x)])
    elif name == "flip":
        data = bytearray(path.read_bytes())
        if data:
            pos = int(x * (len(data) - 1))
            data[pos] ^= 1 + pick % 255
            path.write_bytes(bytes(data))
    elif name == "delete":
        path.unlink()
    else:
        return False
    return True


def dataset_files(root: Path, kind: str) -> list[Path]:
    """The files of one kind (data | video | meta | staged | info | tasks) of a LeRobot v3.0 layout, sorted
    (staged: the files of episodes flexwm's writer has not packed yet)."""
    pattern = {"data": "data/**/*.parquet", "video": "videos/**/*.mp4", "meta": "meta/episodes/**/*.parquet",
               "staged": "meta/staging/*", "info": "meta/info.json", "tasks": "meta/tasks.parquet"}[kind]
    return sorted(root.glob(pattern))


def damage_picked_file(root: Path, op: tuple) -> Path | None:
    """Apply op = (name, kind, pick, x) to the pick-th file of `kind`: a byte-level damage is done here (None is
    returned, as when there is no such file); any other op returns the picked file for the caller to damage."""
    name, kind, pick, x = op
    files = dataset_files(root, kind)
    if not files:
        return None
    path = files[pick % len(files)]
    return None if damage_bytes(path, name, pick, x) else path
