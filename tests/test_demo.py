"""`flexwm demo` end to end with the shipped checkpoint (small settings): collect, install the checkpoint,
act in the real simulator, evaluate policies, write the report; a rerun resumes instead of redoing."""

import json
import time

import pytest

from flexwm.demo import ASSET_DIR, run_demo

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not (ASSET_DIR / "model.safetensors").exists(), reason="no shipped demo checkpoint")
def test_demo_runs_end_to_end_and_resumes(tmp_path):
    out = tmp_path / "demo"
    t0 = time.perf_counter()
    page = run_demo(out, episodes=1, eval_episodes=1, policies=["wam", "random"])
    first = time.perf_counter() - t0
    model = out / "model"
    for name in ("wam", "random"):
        r = json.loads((model / f"eval-{name}.json").read_text())
        assert r["pooled"]["episodes"] == 1 and r["per_task"]["button-press-v3"]["latency"]["decisions"] >= 1
    pe = json.loads((model / "policy-eval-button-press-v3" / "policy_eval.json").read_text())
    assert [p["name"] for p in pe["policies"]] == ["expert", "noisy-0.5", "noisy-1.5", "random"]
    html = page.read_text()
    assert "Acting in the real simulator" in html and "real (left) vs imagined (right)" in html
    assert html.count("data:video/webm;base64,") >= 4
    t1 = time.perf_counter()
    run_demo(out, episodes=1, eval_episodes=1, policies=["wam", "random"])
    assert time.perf_counter() - t1 < first  # every stage is reused
