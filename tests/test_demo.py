"""`flexwm demo`: which model it picks (checkpoints/avdc11-cpu when present, else the tiny checkpoint shipped in
flexwm), and end to end with small settings: collect, install the model, act in the real simulator, evaluate
policies, write the report; a rerun resumes instead of redoing. The end-to-end tests use the tiny checkpoint
(directly, and exported as a model folder in the place of avdc11-cpu), so they do not depend on the large model."""

import dataclasses
import json
import time

import pytest

import flexwm.demo as demo
from flexwm.demo import ASSET_DIR, AVDC, TINY, resolve_model, run_demo
from flexwm.errors import ConfigError

needs_asset = pytest.mark.skipif(not (ASSET_DIR / "model.safetensors").exists(), reason="no shipped demo checkpoint")


def test_auto_picks_checkpoints_avdc11_cpu_else_the_tiny_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "AVDC_MODEL", tmp_path / "nowhere" / "avdc11-cpu")  # hide a source checkout's copy
    assert resolve_model("auto") == (TINY, None)
    found = tmp_path / "checkpoints" / "avdc11-cpu"
    found.mkdir(parents=True)
    (found / "model_index.json").write_text("{}")
    monkeypatch.setattr(demo, "AVDC_MODEL", demo.Path("checkpoints") / "avdc11-cpu")
    setup, source = resolve_model("auto")
    assert setup is AVDC and source.resolve() == found.resolve()
    assert resolve_model("tiny") == (TINY, None) and resolve_model("auto", train=True) == (TINY, None)
    with pytest.raises(ConfigError, match="--train trains the tiny demo model"):
        resolve_model(found, train=True)
    with pytest.raises(ConfigError, match="not an exported model folder"):
        resolve_model(tmp_path)
    # an output folder of an earlier flexwm (no demo.json) holds the tiny model: only the tiny demo resumes it
    (tmp_path / "old" / "model").mkdir(parents=True)
    with pytest.raises(ConfigError, match="holds a demo made with model 'tiny', not 'avdc11-cpu'"):
        demo._claim(tmp_path / "old", AVDC, found, train=False)
    demo._claim(tmp_path / "old", TINY, None, train=False)
    # the setup acts where the model succeeds and evaluates a suite whose real outcomes differ
    assert "door-close-v3" in AVDC.act_tasks and "wam" in AVDC.policies and AVDC.suite_episodes >= 10
    assert {s["kind"] for s in AVDC.suite} == {"expert", "noisy", "random"}
    assert len({s.get("noise") for s in AVDC.suite if s["kind"] == "noisy"}) >= 3


@pytest.mark.slow
@needs_asset
def test_demo_runs_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    t0 = time.perf_counter()
    page = run_demo(out, model="tiny", episodes=1, eval_episodes=1, suite_episodes=2, policies=["wam", "random"])
    first = time.perf_counter() - t0
    model = out / "model"
    for name in ("wam", "random"):
        r = json.loads((model / f"eval-{name}.json").read_text())
        assert r["pooled"]["episodes"] == 1 and r["per_task"]["button-press-v3"]["latency"]["decisions"] >= 1
        assert r["complete"]
    pe = json.loads((model / "policy-eval-button-press-v3" / "policy_eval.json").read_text())
    assert [p["name"] for p in pe["policies"]] == ["expert", "noisy-0.5", "noisy-1.5", "random"]
    printed = capsys.readouterr().out
    assert "success 0/1 episodes" in printed or "success 1/1 episodes" in printed
    assert "policy evaluation on button-press-v3: " in printed and " nan" not in printed.lower()
    html = page.read_text()
    assert "Acting in the real simulator" in html and "real (left) vs imagined (right)" in html
    assert html.count("data:video/webm;base64,") >= 4
    card = html[html.index("Closed-loop policy evaluation"):]
    assert " nan" not in card[:card.index("<img")].lower()
    t1 = time.perf_counter()
    run_demo(out, model="tiny", episodes=1, eval_episodes=1, suite_episodes=2, policies=["wam", "random"])
    assert time.perf_counter() - t1 < first  # every stage is reused
    with pytest.raises(ConfigError, match="holds a demo made with model 'tiny'"):
        run_demo(out, model=_exported_tiny(tmp_path), episodes=1)


def _exported_tiny(tmp_path):
    """The tiny checkpoint as an exported model folder, standing in for checkpoints/avdc11-cpu."""
    from flexwm.inference import export

    path = tmp_path / "exported"
    return path if path.exists() else export(ASSET_DIR, path)


@pytest.mark.slow
@needs_asset
def test_demo_with_an_exported_model_acts_on_the_avdc_tasks(tmp_path, capsys, monkeypatch):
    """The avdc11-cpu path, run with the tiny model exported as a folder (and a smaller setup, for time): the
    folder installed as a run, every collected episode held out, each task acted on, the suite, the report."""
    small = dataclasses.replace(AVDC, tasks=AVDC.tasks[:1], act_tasks=AVDC.act_tasks[:2], suite=AVDC.suite[::2],
                                horizon=32)
    monkeypatch.setattr(demo, "AVDC", small)
    out = tmp_path / "demo"
    page = run_demo(out, model=_exported_tiny(tmp_path), eval_episodes=1, suite_episodes=1, policies=["wam"])
    model = out / "model"
    r = json.loads((model / "eval-wam.json").read_text())
    assert set(r["per_task"]) == set(small.act_tasks) and r["pooled"]["episodes"] == len(small.act_tasks)
    split = json.loads((model / "split.json").read_text())
    assert split["heldout"] == [list(range(small.episodes * 3))]  # (expert, noisy, play): all held out
    pe = json.loads((model / f"policy-eval-{small.suite_task}" / "policy_eval.json").read_text())
    assert [p["name"] for p in pe["policies"]] == [s["name"] for s in small.suite]
    printed = capsys.readouterr().out
    assert all(f"{t:16s} success" in printed for t in small.act_tasks) and " nan" not in printed.lower()
    html = page.read_text()
    assert "Closed-loop policy evaluation" in html and html.count("data:video/webm;base64,") >= 4
    assert json.loads((out / "demo.json").read_text())["model"] == AVDC.name
