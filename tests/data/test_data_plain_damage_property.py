"""Property: whatever damage a packed LeRobot v3.0 dataset suffers (several episodes per file), opening it and
reading every episode gives the original data or a DatasetError that names the dataset, never another exception
(KeyError, IndexError, pyarrow's or PyAV's own errors) and never silently different data.

Two datasets are damaged: one LeRobot wrote (tests/helpers/lerobot_synth.py, one h264 camera: no flexwm labels,
no checksums) and a flexwm dataset packed by flexwm.data.pack (labels and per-file sha256 kept). Each example
copies one, applies one to three random damages (truncated, bit-flipped or deleted files; a dropped column or
row; a changed, missing or mistyped field of meta/episodes or meta/info.json; a shifted video time range), then
opens it under an outcome rule and loads every episode. Documented limit: the dataset LeRobot wrote carries no
checksums, so a flipped bit inside a data page or a video packet that still decodes is read as stored; for
those flips only "DatasetError or no error" is asserted. Damage to meta/tasks.parquet alone is harmless:
instructions come from meta/episodes.
"""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexwm.data import FlexDataset
from flexwm.data.lerobot import VIDEO_KEY
from flexwm.data.pack import pack_dataset
from flexwm.errors import ConfigError, DatasetError
from tests.helpers.damage import damage_picked_file
from tests.helpers.lerobot_synth import FPS, TOP, write_lerobot_dataset
from tests.helpers.synth_data import write_legacy_episodes

VIDEO = f"videos/{TOP}"
OUTCOMES = (None, "success-column")  # the default rule, and one that reads next.success of every episode


@dataclasses.dataclass
class Source:
    root: Path
    episodes: dict  # outcome rule -> the episodes read before any damage
    camera: str
    labelled: bool  # rows carry flexwm's labels (the embodiment among them)
    checksums: bool


def _source(root: Path, camera: str, labelled: bool, checksums: bool) -> Source:
    read = {rule: FlexDataset(root, outcome=rule) for rule in OUTCOMES}
    return Source(root, {rule: [ds.load_episode(i) for i in range(len(ds))] for rule, ds in read.items()}, camera,
                  labelled, checksums)


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Source:
    """A dataset LeRobot wrote (5 episodes in 2 data files, 2 mp4s, 2 metadata files)."""
    root = write_lerobot_dataset(tmp_path_factory.mktemp("orig") / "so100", size=(16, 24), cameras=(TOP,))
    return _source(root, TOP, labelled=False, checksums=False)


@pytest.fixture(scope="module")
def flexwm_packed(tmp_path_factory) -> Source:
    """A flexwm dataset packed by flexwm.data.pack (5 episodes, 2 per file)."""
    base = tmp_path_factory.mktemp("fx")
    write_legacy_episodes(base / "src", range(5))
    return _source(pack_dataset(base / "src", base / "packed", episodes_per_file=2), VIDEO_KEY, labelled=True,
                   checksums=True)


def _rewrite_parquet(path: Path, change) -> None:
    try:
        table = change(pq.read_table(path))
    except (pa.ArrowException, OSError, ValueError):
        return  # already unreadable (an earlier damage): leave it so
    if table is not None:
        pq.write_table(table, path)


# meta/episodes fields ({cam}: the dataset's camera) and the values a damage gives them (None: null; "+"/"-":
# the old value moved by one step)
META_FIELDS = ["episode_index", "length", "dataset_from_index", "dataset_to_index", "data/chunk_index",
               "data/file_index", "videos/{cam}/chunk_index", "videos/{cam}/file_index", "videos/{cam}/from_timestamp",
               "videos/{cam}/to_timestamp", "tasks"]
META_VALUES = [None, "+", "-", -1, 10**6, 1.5]
# meta/info.json fields (dotted: nested) and values
INFO_FIELDS = ["fps", "chunks_size", "codebase_version", "total_episodes", "features", "features.action",
               "features.action.shape", "features.observation.state.shape", "features.{cam}", "features.{cam}.dtype",
               "features.{cam}.info", "features.{cam}.info.video.height", "features.{cam}.shape", "robot_type"]
INFO_VALUES = [None, "ten", 0, -3, [4], 10.5, 7, {}, "DELETE"]


def _shifted(old, sign: int):
    if isinstance(old, float):
        return old + sign / FPS  # one frame period
    if isinstance(old, int):
        return old + sign
    return None


def _change_meta(table: pa.Table, row: int, field: str, value) -> pa.Table | None:
    if field not in table.column_names:
        return None
    rows = table.to_pylist()
    r = rows[row % len(rows)]
    if value in ("+", "-"):
        value = _shifted(r[field], 1 if value == "+" else -1)
    elif field == "tasks" and value is not None:
        value = []  # the list column keeps its type
    r[field] = value
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowException, TypeError, ValueError):
        return None  # a value the column cannot hold: no damage


def _change_info(path: Path, field: str, value, camera: str) -> None:
    try:
        info = json.loads(path.read_text())
        node = info
        *parents, leaf = _feature_path(field, camera) if field.startswith("features.") else field.split(".")
        for k in parents:
            node = node[k]
        if not isinstance(node, dict):
            return
    except (ValueError, KeyError, TypeError):
        return  # already damaged by an earlier step
    if value == "DELETE":
        node.pop(leaf, None)
    else:
        node[leaf] = value
    path.write_text(json.dumps(info))


def _feature_path(field: str, camera: str) -> list[str]:
    """features.<name, may hold dots>.<key>.<sub key, may hold dots> -> ["features", name, key, sub key]."""
    rest = field[len("features."):]
    name = next((n for n in (camera, "observation.state", "action") if rest == n or rest.startswith(n + ".")), None)
    if name is None:
        return ["features", rest]
    tail = rest[len(name) + 1:]
    return ["features", name, *(tail.split(".", 1) if tail else [])]


def _damage(root: Path, op: tuple, camera: str) -> None:
    name, kind, pick, x = op
    path = damage_picked_file(root, op)
    if path is None:
        return
    if name == "extra_column":
        _rewrite_parquet(path, lambda t: t.append_column("unknown.column", pa.array(np.zeros(t.num_rows))))
    elif name == "drop_column":
        _rewrite_parquet(path, lambda t: t.remove_column(pick % t.num_columns))
    elif name == "drop_row":
        _rewrite_parquet(path, lambda t: t.slice(0, max(t.num_rows - 1, 0)))
    elif name == "meta_field":
        field = META_FIELDS[pick % len(META_FIELDS)].format(cam=camera)
        value = META_VALUES[int(x * len(META_VALUES))]
        _rewrite_parquet(path, lambda t: _change_meta(t, pick // len(META_FIELDS), field, value))
    elif name == "info_field":
        field = INFO_FIELDS[pick % len(INFO_FIELDS)].format(cam=camera)
        _change_info(path, field, INFO_VALUES[int(x * len(INFO_VALUES))], camera)


KINDS = {"truncate": ["data", "video", "meta", "info", "tasks"], "flip": ["data", "video", "meta", "info", "tasks"],
         "delete": ["data", "video", "meta", "info", "tasks"], "extra_column": ["data", "meta"],
         "drop_column": ["data", "meta"], "drop_row": ["data", "meta"], "meta_field": ["meta"],
         "info_field": ["info"]}
OPS = st.sampled_from(sorted(KINDS)).flatmap(
    lambda name: st.tuples(st.just(name), st.sampled_from(KINDS[name]), st.integers(0, 1000), st.floats(0.0, 0.999)))


def _same(a, b, embodiment: str) -> bool:
    return (np.array_equal(a.actions, b.actions) and np.array_equal(a.proprio, b.proprio)
            and np.array_equal(a.success, b.success) and np.array_equal(a.frames, b.frames)
            and np.array_equal(a.state, b.state) and a.meta == dataclasses.replace(b.meta, embodiment=embodiment))


def _info_change(op: tuple) -> tuple[str, object] | None:
    name, _, pick, x = op
    return (INFO_FIELDS[pick % len(INFO_FIELDS)], INFO_VALUES[int(x * len(INFO_VALUES))]) if name == "info_field" \
        else None


def _check(source: Source, root: Path, ops: list, outcome: str | None = None) -> str:
    """Damage a copy of `source` at `root` with `ops` and read it back under the outcome rule `outcome`.
    Returns how it ended: "error", "unchecked" (flipped bits read as stored) or "same"."""
    episodes = source.episodes[outcome]
    shutil.copytree(source.root, root)
    for op in ops:
        _damage(root, op, source.camera)
    try:
        ds = FlexDataset(root, outcome=outcome)
        loaded = [ds.load_episode(i) for i in range(len(ds))]
    except (DatasetError, ConfigError) as e:  # ConfigError: cannot be read as asked (e.g. success-column
        assert str(root) in str(e), e  # without a next.success feature); either names where the problem is
        return "error"
    if not source.checksums and any(op[0] == "flip" and op[1] in ("data", "video") for op in ops):
        return "unchecked"  # no checksums: a flipped bit that still parses is read as stored (documented limit)
    assert ds.fps == FPS and len(loaded) == len(episodes), ops
    # robot_type names the embodiment of unlabelled episodes (any string; without one, the default name)
    embodiment = episodes[0].meta.embodiment
    for field, value in filter(None, map(_info_change, ops)):
        if field == "robot_type" and not source.labelled:
            embodiment = value if isinstance(value, str) and value != "DELETE" and value else "lerobot"
    for i, (got, want) in enumerate(zip(loaded, episodes)):
        assert _same(got, want, embodiment), f"episode {i} reads silently different data after {ops}"
    return "same"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=1, max_size=3), outcome=st.sampled_from(OUTCOMES))
def test_damaged_plain_dataset_reads_original_or_raises_dataset_error(original, tmp_path_factory, ops, outcome):
    _check(original, tmp_path_factory.mktemp("dmg") / "ds", ops, outcome)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=1, max_size=3), outcome=st.sampled_from(OUTCOMES))
def test_damaged_packed_flexwm_dataset_reads_original_or_raises_dataset_error(flexwm_packed, tmp_path_factory, ops,
                                                                               outcome):
    """The same for a dataset flexwm packed: its data and video files carry sha256, so every flip is caught."""
    _check(flexwm_packed, tmp_path_factory.mktemp("dmg") / "ds", ops, outcome)


def _meta_rows(root: Path, k: int) -> tuple[Path, list[dict]]:
    path = root / f"meta/episodes/chunk-000/file-{k:03d}.parquet"
    return path, pq.read_table(path).to_pylist()


def _lose_trailing_metadata(root: Path) -> None:
    path, rows = _meta_rows(root, 1)
    pq.write_table(pa.Table.from_pylist(rows[:-1]), path)  # episode 4's row is gone ...
    info = json.loads((root / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps({**info, "total_episodes": None}))  # ... and the count


def _point_at_the_neighbours_video(root: Path) -> None:
    path, rows = _meta_rows(root, 0)
    rows[1][f"{VIDEO}/file_index"] = 1  # episode 1's time range now lies in the mp4 of episodes 2-4
    pq.write_table(pa.Table.from_pylist(rows), path)


def _drop_data_column(name: str):
    def damage(root: Path) -> None:
        path = root / "data/chunk-000/file-000.parquet"
        pq.write_table(pq.read_table(path).drop_columns([name]), path)
    return damage


def _edit_info(change):
    def damage(root: Path) -> None:
        info = json.loads((root / "meta/info.json").read_text())
        change(info)
        (root / "meta/info.json").write_text(json.dumps(info))
    return damage


def _set_tasks(value):
    def damage(root: Path) -> None:
        path, rows = _meta_rows(root, 1)
        rows[0]["tasks"] = value
        pq.write_table(pa.Table.from_pylist(rows), path)
    return damage


# damages the property test found read silently wrong (or crashed with another exception) before the reader
# checked for them; each now gives a DatasetError that says what is wrong
FOUND = {
    "all episode metadata deleted (read as an empty dataset)": (
        lambda root: shutil.rmtree(root / "meta/episodes"), r"holds 0 episode rows .* total_episodes = 5"),
    "the last metadata row and the count lost (read as 4 episodes)": (
        _lose_trailing_metadata, r"data files hold episode 4 but meta/episodes describes only episodes 0\.\.3"),
    "a row points at another episode's video (read its frames)": (
        _point_at_the_neighbours_video, r"episodes \d and \d claim overlapping times of the same video"),
    "next.success missing from a data file (read as never succeeding)": (
        _drop_data_column("next.success"), r"no column for the features \['next.success'\]"),
    "observation.state renamed in info.json (read as absent proprio)": (
        _edit_info(lambda i: i["features"].update({"o8servation.state": i["features"].pop("observation.state")})),
        r"no column for the features \['o8servation.state'\]"),
    "video height in info.json smaller than the video (frames cropped)": (
        _edit_info(lambda i: i["features"][TOP]["info"].update({"video.height": 8})),
        r"holds 16x24 frames \(H x W\), not the 8x24 its metadata gives"),
    "a task string changed in meta/episodes (read as another instruction)": (
        _set_tasks(["open the drawe\""]), r"names tasks \['open the drawe\"'\] that meta/tasks.parquet does not hold"),
    "tasks missing from a row (TypeError, or an empty instruction)": (
        _set_tasks(None), r"episode 2's metadata has tasks None"),
    "action feature without a shape list (AttributeError / TypeError)": (
        _edit_info(lambda i: i["features"]["action"].update({"shape": 10.5})),
        r"feature 'action' has shape 10\.5; it must be a list of non-negative integers"),
    "action feature null (AttributeError)": (
        _edit_info(lambda i: i["features"].update({"action": None})), r"feature 'action' has shape 'missing'"),
    "robot_type not a string (silently renamed)": (
        _edit_info(lambda i: i.update({"robot_type": 7})), r"robot_type = 7; it must be a string"),
}


@pytest.mark.parametrize("case", sorted(FOUND))
def test_damage_the_property_test_found_is_a_clear_error(original, tmp_path, case):
    damage, message = FOUND[case]
    root = tmp_path / "ds"
    shutil.copytree(original.root, root)
    damage(root)
    with pytest.raises(DatasetError, match=message) as e:
        ds = FlexDataset(root)
        [ds.load_episode(i) for i in range(len(ds))]
    msg = str(e.value)  # where, and what to do
    assert str(root) in msg and any(fix in msg for fix in ("flexwm data verify", "restore it", "fix it")), msg


def test_not_utf8_text_in_episode_metadata_is_a_dataset_error(original, tmp_path):
    """Found by the property test: a flipped bit that leaves invalid UTF-8 in a task string raised
    UnicodeDecodeError from pyarrow."""
    root = tmp_path / "ds"
    shutil.copytree(original.root, root)
    path = root / "meta/episodes/chunk-000/file-001.parquet"
    data = path.read_bytes()
    pos = data.index(b"open the drawer")
    path.write_bytes(data[:pos + 10] + b"\x9b" + data[pos + 11:])
    with pytest.raises(DatasetError, match="episode metadata file .*file-001.parquet is damaged"):
        FlexDataset(root)


def test_a_missing_feature_names_the_ones_there_are(original, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(original.root, root)
    _edit_info(lambda i: i["features"].pop("action"))(root)
    with pytest.raises(DatasetError, match=r"has no 'action' feature \(features: \['episode_index', .*"
                                           r"'observation.state'.*\]\); flexwm needs actions"):
        FlexDataset(root)
    with pytest.raises(DatasetError, match=rf"no camera 'observation.images.side'; its cameras are \['{TOP}'\]"):
        FlexDataset(original.root, camera="observation.images.side")
