"""Where the episodes of a flexwm dataset are: the episode metadata of the packed layout (meta/episodes, plus
the episodes waiting in meta/staging) and of the older one-episode-per-file layout, read from meta/ only, and
the files an interrupted write leaves behind (orphans)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from flexwm.data import plain
from flexwm.data.lerobot import (
    ENV_STATE_KEY,
    EPISODES_DIR,
    LEGACY_ENV_STATE_KEY,
    STAGING_DIR,
    chunk_file,
    episode_meta_path,
    episodes_schema,
    optional_episode_columns,
)
from flexwm.errors import DatasetError

_FILE_RE = re.compile(r"file-(\d+)\.parquet")
_CHUNK_RE = re.compile(r"chunk-(\d+)")
_STAGED_RE = re.compile(r"episode-(\d+)\.(parquet|mp4|meta\.parquet)")

def fix_hint(root: Path) -> str:
    return (f"run `flexwm data verify {root}` to list every damaged episode, then re-collect into a new --out "
            "directory (or restore the file from a copy)")


def is_int(v: Any, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def list_episode_files(root: Path, chunks_size: int) -> dict[int, Path]:
    """{episode_index: metadata file} from the names under meta/episodes (temp files are skipped)."""
    out: dict[int, Path] = {}
    base = Path(root) / EPISODES_DIR
    if not base.is_dir():
        return out
    for chunk_dir in base.iterdir():
        m = _CHUNK_RE.fullmatch(chunk_dir.name)
        if not (m and chunk_dir.is_dir()):
            continue
        for f in chunk_dir.iterdir():
            fm = _FILE_RE.fullmatch(f.name)
            if fm:
                out[int(m.group(1)) * chunks_size + int(fm.group(1))] = f
    return out


def read_episode_rows(root: Path, info: dict) -> list[dict[str, Any]]:
    """All episode metadata rows (stats columns included), checked to be contiguous and consistent."""
    root = Path(root)
    chunks_size = int(info["chunks_size"])
    files = list_episode_files(root, chunks_size)
    rows: list[dict[str, Any]] = []
    for i in range(len(files)):
        if i not in files:
            last = max(files)
            raise DatasetError(f"{root}: the metadata of episode {i} is missing but episode {last} exists "
                               f"(expected {episode_meta_path(root, *chunk_file(i, chunks_size))}); "
                               f"{fix_hint(root)}")
        path = files[i]
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as e:
            raise DatasetError(f"{root}: episode {i}'s metadata file {path} is damaged ({e}); {fix_hint(root)}") from e
        if table.num_rows != 1 or "episode_index" not in table.column_names:
            raise DatasetError(f"{root}: {path} should hold one episode row, found {table.num_rows}; {fix_hint(root)}")
        missing = [c for c in required_meta(env_state_key_of(info)) if c not in table.column_names]
        if missing:
            raise DatasetError(f"{root}: episode {i}'s metadata file {path} lacks columns {missing}; {fix_hint(root)}")
        row = table.to_pylist()[0]
        problem = _row_problem(row, i, rows[-1] if rows else None)
        if problem:
            raise DatasetError(f"{root}: episode {i}'s metadata ({path}) {problem}; {fix_hint(root)}")
        rows.append(row)
    return rows


def env_state_key_of(info: dict) -> str:
    """The privileged-state column of a flexwm dataset: its old name in datasets written before the rename."""
    return LEGACY_ENV_STATE_KEY if LEGACY_ENV_STATE_KEY in info.get("features", {}) else ENV_STATE_KEY


def required_meta(env_key: str) -> list[str]:
    optional = optional_episode_columns(env_key)
    return [n for n in episodes_schema(env_key).names if n not in optional]


def is_flexwm_layout(root: Path, info: dict) -> bool:
    """True for a dataset in flexwm's own layout: one episode per file, each metadata row carrying flexwm's
    labels. False for one LeRobot wrote or rewrote (e.g. with `delete_episodes`), read as packed files."""
    fx = info.get("flexwm")
    if not isinstance(fx, dict) or fx.get("episodes_per_file") != 1:
        return False
    for path in list_episode_files(root, int(info["chunks_size"])).values():
        try:
            meta = pq.read_metadata(path)
            names = meta.schema.names
        except (pa.ArrowException, OSError, ValueError):
            continue  # damaged: flexwm's reader reports it by name
        if meta.num_rows != 1 or "outcome" not in names:
            return False
    return True


def is_packed_flexwm(info: dict) -> bool:
    """True for a dataset flexwm wrote packed (its writer, or flexwm.data.pack): many episodes per file."""
    fx = info.get("flexwm")
    return isinstance(fx, dict) and fx.get("packed") is True and fx.get("episodes_per_file") != 1


def read_flexwm_packed_rows(root: Path, info: dict, layout: plain.Layout, *, stats: bool = False
                            ) -> list[dict[str, Any]]:
    """The episode rows of a packed flexwm dataset: those in meta/episodes, then the staged ones (marked
    `staged`), checked to be contiguous and at least as many as info.json's total (written after each episode's
    metadata, so a stale count is lower, never higher: fewer rows mean a lost metadata file). Reads meta/ only."""
    hint = fix_hint(root)
    rows = plain.read_packed_rows(root, all_episode_files(root), layout, hint, None, int(info["fps"]), stats=stats,
                                  scan_data=False)
    rows += read_staged_rows(root, info, rows)
    total = info.get("total_episodes")
    if is_int(total, 0) and len(rows) < total:
        raise DatasetError(f"{root}: meta/episodes and {STAGING_DIR} describe {len(rows)} episodes but meta/info.json "
                           f"says total_episodes = {total}; an episode metadata file is missing or damaged; {hint}")
    return rows


def read_staged_rows(root: Path, info: dict, done: list[dict]) -> list[dict[str, Any]]:
    """Episodes waiting in meta/staging for their packed file, numbered on from the packed ones. A staged
    episode that is also packed (a kill after its packed file was committed) is skipped."""
    base = Path(root) / STAGING_DIR
    if not base.is_dir():
        return []
    found = {}
    for f in base.iterdir():
        m = _STAGED_RE.fullmatch(f.name)
        if m and m.group(2) == "meta.parquet":
            found[int(m.group(1))] = f
    rows: list[dict[str, Any]] = []
    prev = done[-1] if done else None
    i = len(done)
    need = required_meta(env_state_key_of(info))
    while i in found:
        path = found[i]
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError, ValueError) as e:
            raise DatasetError(f"{root}: staged episode {i}'s metadata file {path} is damaged ({e}); "
                               f"{fix_hint(root)}") from e
        missing = [c for c in need if c not in table.column_names]
        if table.num_rows != 1 or missing:
            raise DatasetError(f"{root}: staged episode {i}'s metadata file {path} should hold one episode row with "
                               f"flexwm's columns (rows: {table.num_rows}, missing: {missing}); {fix_hint(root)}")
        row = table.to_pylist()[0]
        problem = _row_problem(row, i, prev)
        if problem:
            raise DatasetError(f"{root}: staged episode {i}'s metadata ({path}) {problem}; {fix_hint(root)}")
        row["staged"] = True
        rows.append(row)
        prev = row
        i += 1
    later = sorted(k for k in found if k > i)
    if later:
        raise DatasetError(f"{root}: the metadata of episode {i} is missing but staged episode {later[0]} exists "
                           f"({found[later[0]]}); {fix_hint(root)}")
    return rows


def all_episode_files(root: Path) -> list[Path]:
    base = Path(root) / EPISODES_DIR
    return sorted(f for f in base.glob("chunk-*/file-*.parquet") if _CHUNK_RE.fullmatch(f.parent.name)
                  and _FILE_RE.fullmatch(f.name)) if base.is_dir() else []


def _row_problem(row: dict, i: int, prev: dict | None) -> str | None:
    if row.get("episode_index") != i:
        return f"says episode_index {row.get('episode_index')}"
    start = prev["dataset_to_index"] if prev else 0
    if row.get("dataset_from_index") != start:
        return f"has dataset_from_index {row.get('dataset_from_index')} but the previous episode ends at {start}"
    if row.get("length", 0) < 1 or row.get("dataset_to_index") != start + row["length"]:
        return f"has dataset_to_index {row.get('dataset_to_index')} != from {start} + length {row.get('length')}"
    return None


def task_list_of(rows: list[dict]) -> list[str]:
    """Tasks (LeRobot task strings = instructions) in task_index order: order of first appearance."""
    seen: dict[str, None] = {}
    for r in rows:
        for t in r["tasks"]:
            seen.setdefault(t, None)
    return list(seen)


def _dataset_files(root: Path):
    """Every file under a dataset's meta/, data/ and videos/ (temp files included)."""
    for base in (Path(root) / "meta", Path(root) / "data", Path(root) / "videos"):
        if base.is_dir():
            yield from (f for f in base.rglob("*") if f.is_file())


def find_orphans(root: Path, n_episodes: int, chunks_size: int) -> list[Path]:
    """Files an interrupted write left behind: temp files, and data/video/metadata files of episodes >= n."""
    out = []
    for f in _dataset_files(root):
        if f.name.startswith(".") and f.name.endswith(".tmp"):
            out.append(f)
            continue
        fm = re.fullmatch(r"file-(\d+)\.(parquet|mp4)", f.name)
        cm = _CHUNK_RE.fullmatch(f.parent.name)
        if fm and cm and int(cm.group(1)) * chunks_size + int(fm.group(1)) >= n_episodes:
            out.append(f)
    return sorted(out)


def find_packed_orphans(root: Path, rows: list[dict]) -> list[Path]:
    """Files of a packed flexwm dataset that no episode row points at: temp files, data/video files of a packed
    file whose commit (its meta/episodes file) never happened, staged files of an episode not committed or already
    packed. Lists the data and video directories (it does not open their files)."""
    root = Path(root)
    used = {("data", r["data/chunk_index"], r["data/file_index"]) for r in rows if not r.get("staged")}
    for r in rows:
        for key in r:
            if key.startswith("videos/") and key.endswith("/chunk_index") and not r.get("staged"):
                cam = key[len("videos/"):-len("/chunk_index")]
                used.add((cam, r[key], r[f"videos/{cam}/file_index"]))
    staged = {r["episode_index"] for r in rows if r.get("staged")}
    out = []
    for f in _dataset_files(root):
        rel = f.relative_to(root).parts
        fm = re.fullmatch(r"file-(\d+)\.(parquet|mp4)", f.name)
        cm = _CHUNK_RE.fullmatch(f.parent.name)
        sm = _STAGED_RE.fullmatch(f.name)
        if f.name.startswith(".") and f.name.endswith(".tmp"):
            out.append(f)
        elif rel[0] == "data" and fm and cm and len(rel) == 3:
            if ("data", int(cm.group(1)), int(fm.group(1))) not in used:
                out.append(f)
        elif rel[0] == "videos" and fm and cm and len(rel) == 4:
            if (rel[1], int(cm.group(1)), int(fm.group(1))) not in used:
                out.append(f)
        elif f.parent == root / STAGING_DIR and sm and int(sm.group(1)) not in staged:
            out.append(f)
    return sorted(out)
