"""Datasets: LeRobot v3 layout (parquet + mp4) written crash-safely, read back, verified, and cut into windows.
Datasets LeRobot wrote are read as they are (flexwm.data.plain: packed files, any camera, declared outcomes).

`WindowDataset` and `collate_windows` (flexwm.data.windows) import torch, so they are loaded on first use.
"""

from flexwm.data.episode import OUTCOMES, SOURCES, Episode, EpisodeMeta
from flexwm.data.inspect import dataset_info, format_info, write_preview
from flexwm.data.pack import pack_dataset
from flexwm.data.plain import OUTCOME_RULES
from flexwm.data.reader import FlexDataset, verify
from flexwm.data.writer import DatasetWriter

__all__ = ["OUTCOMES", "OUTCOME_RULES", "SOURCES", "DatasetWriter", "Episode", "EpisodeMeta", "FlexDataset",
           "WindowDataset",
           "collate_windows", "dataset_info", "format_info", "pack_dataset", "verify", "write_preview"]


def __getattr__(name: str):
    if name in ("WindowDataset", "collate_windows"):
        from flexwm.data import windows

        return getattr(windows, name)
    raise AttributeError(f"module 'flexwm.data' has no attribute {name!r}")
