"""Natural-language instructions for every task: one canonical instruction and hand-written paraphrases.

Each task has a fixed split of its paraphrases:

* ``"train"``: the canonical instruction and the paraphrases a model may be trained on;
* ``"eval"``: paraphrases held out for evaluation only (never used in training), to test whether a model
  understands the instruction rather than memorising a string;
* ``"all"``: both.

Task-free autonomous play has no instruction: ``PLAY_INSTRUCTION`` (the empty string).
"""

from __future__ import annotations

from typing import Literal

from flexwm.errors import EnvError

PLAY_INSTRUCTION = ""

Split = Literal["train", "eval", "all"]

# task -> (canonical, training paraphrases, evaluation-only paraphrases)
_INSTRUCTIONS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "assembly-v3": (
        "put the nut onto the peg",
        ("place the ring on the peg", "pick up the nut and slide it over the peg",
         "assemble the nut onto the peg", "fit the ring around the peg"),
        ("thread the nut down onto the post", "lower the ring over the peg",
         "grab the nut and put it on the peg"),
    ),
    "basketball-v3": (
        "put the ball into the hoop",
        ("dunk the ball into the basket", "pick up the basketball and drop it in the hoop",
         "score a basket with the ball", "place the ball in the basket"),
        ("slam dunk the ball", "lift the ball and put it through the hoop",
         "get the ball into the net"),
    ),
    "bin-picking-v3": (
        "move the puck from one bin to the other",
        ("pick the puck out of the bin and place it in the other bin", "transfer the puck into the second bin",
         "take the puck from the left bin and drop it into the right bin", "carry the puck over to the other bin"),
        ("relocate the block to the neighbouring bin", "lift the puck and put it in the empty bin",
         "grab the puck and move it across to the other container"),
    ),
    "box-close-v3": (
        "close the box with its lid",
        ("put the lid on the box", "pick up the cover and place it on the box",
         "cover the box", "shut the box by placing its lid on top"),
        ("grab the lid and close the box", "place the cap on top of the box",
         "seal the box with the cover"),
    ),
    "button-press-topdown-v3": (
        "press the button from the top",
        ("push the button down from above", "press down on the button",
         "push the button from the top", "press the button down"),
        ("hit the button from above", "tap the top of the button",
         "push straight down on the button"),
    ),
    "button-press-topdown-wall-v3": (
        "press the button from the top behind the wall",
        ("reach over the wall and press the button down", "push the button down from above, past the wall",
         "press down on the button behind the wall", "go around the wall and press the button from the top"),
        ("avoid the wall and push the button from above", "hit the button from above without touching the wall",
         "push down the button that is behind the wall"),
    ),
    "button-press-v3": (
        "press the button",
        ("push the button", "press the button in", "push the button forward",
         "press the button on the box"),
        ("hit the button", "push in the button from the front", "poke the button"),
    ),
    "button-press-wall-v3": (
        "press the button behind the wall",
        ("reach past the wall and push the button", "go around the wall and press the button",
         "push the button that is behind the wall", "press the button without hitting the wall"),
        ("avoid the wall and hit the button", "get past the wall to push the button in",
         "press in the button beyond the wall"),
    ),
    "coffee-button-v3": (
        "press the button on the coffee machine",
        ("push the coffee machine button", "start the coffee machine with its button",
         "press the coffee maker's button", "push the button to make coffee"),
        ("hit the button on the espresso machine", "turn on the coffee machine",
         "brew a coffee by pressing the button"),
    ),
    "coffee-pull-v3": (
        "pull the mug out of the coffee machine",
        ("take the cup away from the coffee machine", "pull the coffee mug towards you",
         "remove the mug from under the coffee machine", "slide the mug out from the coffee maker"),
        ("get the coffee cup out of the machine", "draw the mug back from the espresso machine",
         "grab the mug and pull it away from the machine"),
    ),
    "coffee-push-v3": (
        "push the mug under the coffee machine",
        ("slide the cup under the coffee machine", "put the mug beneath the coffee maker",
         "push the coffee mug into the machine", "move the mug under the coffee spout"),
        ("place the cup under the espresso machine", "shove the mug forward into the coffee machine",
         "get the mug in position under the machine"),
    ),
    "dial-turn-v3": (
        "turn the dial",
        ("rotate the dial", "spin the knob around", "twist the dial", "turn the knob"),
        ("give the dial a turn", "rotate the knob half a turn", "wind the dial around"),
    ),
    "disassemble-v3": (
        "take the nut off the peg",
        ("pull the ring off the peg", "lift the nut off the peg", "remove the nut from the peg",
         "disassemble the nut from the peg"),
        ("pick the ring up and off the post", "unmount the nut from the peg",
         "get the ring off the peg"),
    ),
    "door-close-v3": (
        "close the door",
        ("shut the door", "push the door closed", "swing the door shut", "close the cabinet door"),
        ("push the door until it is closed", "make the door closed", "swing the door back shut"),
    ),
    "door-lock-v3": (
        "lock the door",
        ("turn the lock to lock the door", "rotate the door lock down", "lock the safe door",
         "turn the door's lock"),
        ("twist the lock into the locked position", "secure the door with the lock",
         "push the lock knob down to lock it"),
    ),
    "door-open-v3": (
        "open the door",
        ("pull the door open", "swing the door open", "open the cabinet door", "pull the door handle to open it"),
        ("get the door open", "grab the handle and open the door", "swing the door wide open"),
    ),
    "door-unlock-v3": (
        "unlock the door",
        ("turn the lock to unlock the door", "rotate the door lock up", "unlock the safe door",
         "release the door lock"),
        ("twist the lock into the unlocked position", "undo the lock on the door",
         "push the lock knob up to unlock it"),
    ),
    "hand-insert-v3": (
        "put the hand into the hole",
        ("insert the gripper into the hole", "move the gripper down into the hole",
         "reach into the hole in the table", "place the hand in the hole"),
        ("stick the gripper in the hole", "lower the hand into the opening",
         "push the gripper into the hole in the table"),
    ),
    "drawer-close-v3": (
        "close the drawer",
        ("push the drawer closed", "shut the drawer", "slide the drawer in", "push the drawer in"),
        ("push the drawer shut", "slide the drawer closed", "close the open drawer"),
    ),
    "drawer-open-v3": (
        "open the drawer",
        ("pull the drawer open", "slide the drawer out", "pull the drawer out", "open the drawer by its handle"),
        ("grab the handle and pull out the drawer", "get the drawer open", "draw the drawer out"),
    ),
    "faucet-open-v3": (
        "open the faucet",
        ("turn the faucet on", "rotate the faucet handle to open it", "turn on the tap", "open the tap"),
        ("turn the water on", "twist the faucet open", "swing the tap handle to the open side"),
    ),
    "faucet-close-v3": (
        "close the faucet",
        ("turn the faucet off", "rotate the faucet handle to close it", "turn off the tap", "close the tap"),
        ("turn the water off", "twist the faucet closed", "swing the tap handle to the closed side"),
    ),
    "hammer-v3": (
        "hammer the nail into the wall",
        ("pick up the hammer and drive the nail in", "use the hammer to knock the nail in",
         "hit the nail with the hammer", "hammer the peg into the board"),
        ("grab the hammer and pound the nail", "drive the nail home with the hammer",
         "strike the nail with the hammer until it goes in"),
    ),
    "handle-press-side-v3": (
        "press the handle down from the side",
        ("push the handle down sideways", "press down on the handle from the side",
         "push the side handle down", "press the lever handle down from the side"),
        ("push down the handle that faces sideways", "lower the handle from the side",
         "press the sideways handle all the way down"),
    ),
    "handle-press-v3": (
        "press the handle down",
        ("push the handle down", "press down on the handle", "push down the lever handle",
         "press the handle all the way down"),
        ("lower the handle", "push the handle to the bottom", "press on the handle until it goes down"),
    ),
    "handle-pull-side-v3": (
        "pull the handle up from the side",
        ("lift the handle sideways", "pull up the side handle", "raise the handle from the side",
         "pull the sideways handle up"),
        ("lift up the handle that faces sideways", "raise the side handle all the way up",
         "pull the handle upwards from the side"),
    ),
    "handle-pull-v3": (
        "pull the handle up",
        ("lift the handle", "pull up the handle", "raise the handle", "pull the handle upwards"),
        ("lift the handle all the way up", "raise the lever handle", "pull on the handle until it is up"),
    ),
    "lever-pull-v3": (
        "pull the lever up",
        ("lift the lever", "raise the lever", "rotate the lever upwards", "pull up on the lever"),
        ("swing the lever up", "push the lever arm up", "turn the lever to the top"),
    ),
    "pick-place-wall-v3": (
        "pick up the puck and place it behind the wall",
        ("lift the puck over the wall and put it at the goal", "carry the puck past the wall",
         "move the puck over the wall to the target", "grab the puck and set it down on the other side of the wall"),
        ("take the puck across the wall", "lift the block over the barrier and place it",
         "put the puck on the far side of the wall"),
    ),
    "pick-out-of-hole-v3": (
        "pick the puck out of the hole",
        ("lift the puck out of the hole", "take the puck out of the hole", "pull the peg up out of the hole",
         "grab the puck from the hole and lift it"),
        ("get the puck out of the hole", "remove the puck from the hole", "raise the puck out of the opening"),
    ),
    "pick-place-v3": (
        "pick up the puck and place it at the goal",
        ("move the puck to the target", "lift the puck and put it at the goal", "carry the puck to the goal",
         "grab the puck and set it down on the target"),
        ("place the block at the marked spot", "take the puck and move it to the goal location",
         "pick the puck up and drop it at the target"),
    ),
    "plate-slide-v3": (
        "slide the plate into the cabinet",
        ("push the plate into the cabinet", "slide the plate forward into the goal",
         "push the plate into the slot", "put the plate in the cabinet"),
        ("shove the plate into the cabinet", "move the plate into the rack",
         "slide the dish into the cabinet"),
    ),
    "plate-slide-side-v3": (
        "slide the plate sideways into the cabinet",
        ("push the plate sideways into the cabinet", "slide the plate to the side into the goal",
         "push the plate into the cabinet from the side", "slide the plate across into the cabinet"),
        ("shove the plate sideways into the rack", "move the plate to the side into the cabinet",
         "slide the dish sideways into the cabinet"),
    ),
    "plate-slide-back-v3": (
        "slide the plate out of the cabinet",
        ("pull the plate out of the cabinet", "get the plate from the cabinet",
         "slide the plate back out of the goal", "take the plate out of the cabinet"),
        ("draw the plate out of the rack", "pull the dish back out of the cabinet",
         "retrieve the plate from the cabinet"),
    ),
    "plate-slide-back-side-v3": (
        "slide the plate sideways out of the cabinet",
        ("pull the plate sideways out of the cabinet", "get the plate from the cabinet sideways",
         "slide the plate out of the cabinet to the side", "take the plate out of the cabinet sideways"),
        ("draw the plate out of the rack to the side", "pull the dish out sideways",
         "retrieve the plate from the cabinet by sliding it sideways"),
    ),
    "peg-insert-side-v3": (
        "insert the peg into the hole from the side",
        ("push the peg sideways into the hole", "put the peg in the hole", "slide the peg into the hole",
         "pick up the peg and insert it into the box"),
        ("plug the peg into the hole", "fit the peg into the side opening",
         "grab the peg and push it into the hole"),
    ),
    "peg-unplug-side-v3": (
        "unplug the peg from the side",
        ("pull the peg out sideways", "take the peg out of the hole", "pull out the peg",
         "remove the peg from the hole"),
        ("unplug the peg", "draw the peg out of the box", "grab the peg and pull it out"),
    ),
    "soccer-v3": (
        "kick the ball into the goal",
        ("push the soccer ball into the net", "score a goal with the ball", "shoot the ball into the goal",
         "get the soccer ball into the goal"),
        ("push the ball into the net", "roll the ball into the goal", "put the football in the goal"),
    ),
    "stick-push-v3": (
        "push the box with the stick",
        ("grab the stick and use it to push the box", "pick up the stick and shove the box",
         "use the stick to push the box forward", "push the box using the stick"),
        ("move the box with the stick", "take the stick and push the container",
         "shove the box along with the stick"),
    ),
    "stick-pull-v3": (
        "pull the box with the stick",
        ("grab the stick and use it to pull the box", "pick up the stick and drag the box",
         "use the stick to pull the box back", "pull the box using the stick"),
        ("drag the box with the stick", "take the stick and pull the container",
         "hook the box with the stick and pull it"),
    ),
    "push-v3": (
        "push the puck to the goal",
        ("slide the puck to the target", "push the puck to the target location", "move the puck to the goal",
         "push the block to the goal"),
        ("shove the puck to the marked spot", "slide the puck over to the goal",
         "nudge the puck until it reaches the target"),
    ),
    "push-wall-v3": (
        "push the puck around the wall to the goal",
        ("slide the puck past the wall to the target", "push the puck to the goal behind the wall",
         "move the puck around the wall to the goal", "push the block past the wall"),
        ("shove the puck around the barrier to the goal", "get the puck past the wall to the target",
         "slide the puck to the goal without hitting the wall"),
    ),
    "push-back-v3": (
        "push the puck back to the goal",
        ("slide the puck backwards to the target", "pull the puck back to the goal",
         "move the puck towards the robot to the goal", "push the block back to the target"),
        ("drag the puck back to the marked spot", "bring the puck back to the goal",
         "slide the puck towards yourself to the target"),
    ),
    "reach-v3": (
        "reach the goal",
        ("move the gripper to the goal", "reach the target position", "move the hand to the target",
         "reach for the goal position"),
        ("go to the target", "put the gripper at the goal location", "touch the goal point"),
    ),
    "reach-wall-v3": (
        "reach the goal behind the wall",
        ("move the gripper over the wall to the goal", "reach the target past the wall",
         "go around the wall to the target", "move the hand to the goal behind the wall"),
        ("reach past the barrier to the goal", "get the gripper to the target beyond the wall",
         "reach over the wall to the target"),
    ),
    "shelf-place-v3": (
        "put the puck on the shelf",
        ("place the puck on the shelf", "pick up the puck and put it on the shelf",
         "move the puck onto the shelf", "lift the block onto the shelf"),
        ("set the puck down on the shelf", "shelve the puck", "grab the puck and place it on the rack"),
    ),
    "sweep-into-v3": (
        "sweep the puck into the hole",
        ("push the puck into the hole", "slide the puck into the hole", "sweep the block into the hole",
         "move the puck into the hole in the table"),
        ("brush the puck into the hole", "knock the puck into the opening",
         "get the puck into the hole by pushing it"),
    ),
    "sweep-v3": (
        "sweep the puck off the table",
        ("push the puck off the edge of the table", "slide the puck off the table", "sweep the block off the table",
         "push the puck off the table"),
        ("brush the puck off the table", "knock the puck off the edge", "clear the puck from the table"),
    ),
    "window-open-v3": (
        "open the window",
        ("slide the window open", "push the window open", "slide the window to the side to open it",
         "open the sliding window"),
        ("get the window open", "move the window pane to open it", "slide the glass open"),
    ),
    "window-close-v3": (
        "close the window",
        ("slide the window closed", "push the window closed", "slide the window to the side to close it",
         "shut the sliding window"),
        ("get the window shut", "move the window pane to close it", "slide the glass closed"),
    ),
    "pusht": (
        "push the T-shaped block onto the green target",
        ("push the T into the goal area", "align the T block with the green T",
         "slide the T onto the target outline", "move the T block so it covers the green region"),
        ("line up the T with its green target", "push the tee so that it matches the target pose",
         "nudge the T block into the green shape"),
    ),
}


def known_tasks() -> list[str]:
    """Every task that has instructions (the 50 Meta-World v3 tasks and pusht)."""
    return list(_INSTRUCTIONS)


def _entry(task: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    try:
        return _INSTRUCTIONS[task]
    except KeyError:
        import difflib

        hint = difflib.get_close_matches(task, list(_INSTRUCTIONS), n=1)
        hint_text = f" Did you mean {hint[0]!r}?" if hint else ""
        raise EnvError(
            f"no instructions for task {task!r}.{hint_text} Valid tasks: {', '.join(_INSTRUCTIONS)}"
        ) from None


def canonical_instruction(task: str) -> str:
    """The one instruction used when collecting expert data and evaluating on `task`."""
    return _entry(task)[0]


def paraphrases(task: str, split: Split = "all") -> list[str]:
    """Instructions for `task`. "train" includes the canonical one; "eval" are held out (never for training)."""
    canonical, train, held_out = _entry(task)
    if split == "train":
        return [canonical, *train]
    if split == "eval":
        return list(held_out)
    if split == "all":
        return [canonical, *train, *held_out]
    raise EnvError(f"unknown paraphrase split {split!r}; choose 'train', 'eval' or 'all'")
