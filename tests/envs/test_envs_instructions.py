"""Instructions: every task has a canonical instruction, training paraphrases and held-out evaluation ones."""

import pytest

from flexwm.envs import PLAY_INSTRUCTION, list_tasks
from flexwm.envs.instructions import canonical_instruction, known_tasks, paraphrases
from flexwm.errors import EnvError


def test_every_task_has_instructions_with_disjoint_splits():
    tasks = list_tasks("metaworld") + list_tasks("pusht")
    assert len(list_tasks("metaworld")) == 50
    assert sorted(known_tasks()) == sorted(tasks)
    for task in tasks:
        train, held_out, every = paraphrases(task, "train"), paraphrases(task, "eval"), paraphrases(task, "all")
        assert train[0] == canonical_instruction(task)
        assert len(every) >= 7, task  # the canonical one and at least 6 paraphrases
        assert len(held_out) >= 2, task
        assert not set(train) & set(held_out), task
        assert len(set(every)) == len(every), f"{task} has duplicate instructions"
        assert all(s and s == s.strip() for s in every), task


def test_instructions_are_specific_to_their_task():
    canon = [canonical_instruction(t) for t in known_tasks()]
    assert len(set(canon)) == len(canon)
    everything = [s for t in known_tasks() for s in paraphrases(t, "all")]
    assert len(set(everything)) == len(everything), "an instruction is shared by two tasks"
    assert "door" in canonical_instruction("door-open-v3") and "open" in canonical_instruction("door-open-v3")
    assert PLAY_INSTRUCTION == ""


def test_unknown_task_and_split_are_clear_errors():
    with pytest.raises(EnvError, match=r"(?i)door-opn-v3.*did you mean 'door-open-v3'.*reach-v3"):
        canonical_instruction("door-opn-v3")
    with pytest.raises(EnvError, match="split"):
        paraphrases("reach-v3", "test")  # type: ignore[arg-type]
