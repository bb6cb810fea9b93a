"""dataset_info / format_info counts, and the preview grid video."""

import numpy as np
import pytest

from flexwm.data import DatasetWriter, dataset_info, format_info, write_preview
from flexwm.data.inspect import OUTCOME_COLORS
from flexwm.data.video import decode_video
from flexwm.errors import DatasetError
from tests.helpers.synth_data import SCHEMA, make_episode, write_episodes


def test_dataset_info_counts(tmp_path):
    write_episodes(tmp_path / "ds", range(7))
    info = dataset_info(tmp_path / "ds")
    eps = [make_episode(i) for i in range(7)]
    assert info["episodes"] == 7 and info["frames"] == sum(e.length for e in eps)
    assert info["by_outcome"] == {"success": 3, "failure": 2, "play": 2}
    assert info["by_source"] == {"expert": 3, "noisy": 2, "play": 2}
    assert info["by_task"] == {"door-open-v3": 4, "button-press-v3": 3}
    assert info["by_embodiment"] == {"sawyer": 7}
    assert info["by_task_outcome"]["door-open-v3"] == {"success": 2, "failure": 1, "play": 1}
    assert (info["fps"], info["image_size"], info["action_dim"], info["proprio_dim"]) == (10, [32, 32], 4, 3)
    assert info["length"]["min"] == min(e.length for e in eps)
    text = format_info(info)
    assert "episodes  7" in text and "door-open-v3" in text
    row = next(line for line in text.splitlines() if line.startswith("door-open-v3"))
    assert row.split()[1:] == ["2", "1", "1", "4"]


def test_preview_is_a_decodable_grid(tmp_path):
    with DatasetWriter(tmp_path / "ds", **SCHEMA) as w:
        for i, T in enumerate([6, 10, 8, 4, 5]):
            w.add(make_episode(i, T, counting=True))
    out = write_preview(tmp_path / "ds", tmp_path / "p.mp4", n_episodes=4)
    video = decode_video(out)
    # 4 of 5 episodes spread over the dataset (0, 1, 3, 4) in a 2x2 grid of 32px tiles with 2px borders
    assert video.shape == (10, 72, 72, 3)
    tile = video[:, 10:26, 10:26]  # centre of episode 0 (6 steps), which holds its last frame
    means = tile.reshape(10, -1).mean(1)  # grey 10 + 6t, within ~3 levels (many tiles: a harder encode)
    assert np.all(np.diff(means[:6]) > 2) and np.ptp(means[5:]) < 1, means
    np.testing.assert_allclose(means[:6], 10 + 6 * np.arange(6), atol=4)
    colour = {(y, x): video[0, y, x].astype(int) for y, x in ((0, 10), (0, 46), (36, 10), (36, 46))}
    for (y, x), outcome in zip(colour, ("success", "failure", "success", "failure"), strict=True):  # eps 0 1 3 4
        assert np.abs(colour[y, x] - OUTCOME_COLORS[outcome]).max() < 40, (y, x, colour[y, x], outcome)
    with pytest.raises(DatasetError, match="no episodes"):
        with DatasetWriter(tmp_path / "empty", **SCHEMA):
            pass
        write_preview(tmp_path / "empty", tmp_path / "e.mp4")
