"""The offline HTML report: self-contained, rebuilt from a run's files, and it loads in a real headless browser
(videos decode, no console errors). The browser is Debian's chromium (`make test` installs it when missing)."""

import html
import json
import re
import shutil
import subprocess
import sys

import pytest

from flexwm.errors import ConfigError
from flexwm.report import build_report
from flexwm.training.run import preset, train_world_model
from tests.helpers.toy_training_data import write_toy_dataset

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("rep")
    data = write_toy_dataset(root / "toy")
    run = root / "run"
    train_world_model(preset("tiny", data=[str(data)], tokenizer={"image_size": 32}), run, progress=False,
                      command=["flexwm", "train", "--data", str(data), "--preset", "tiny"])
    # an evaluation result as `flexwm eval` writes it
    (run / "eval-random.json").write_text(json.dumps({
        "policy": "random", "instructions": "eval", "average_over_tasks": 0.25,
        "pooled": {"episodes": 4, "successes": 1, "rate": 0.25, "ci95": [0.046, 0.699]},
        "per_task": {"toy": {"summary": {"episodes": 4, "successes": 1, "rate": 0.25, "ci95": [0.046, 0.699]},
                             "latency": {"mean_s": 0.002}}}}))
    return run, build_report(run, rollouts=2)


def test_report_is_self_contained_and_shows_the_run(report):
    run, path = report
    page = path.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page), "the page must not load anything remote"
    assert "<link" not in page and "@import" not in page
    items = json.loads((run / "report" / "rollouts.json").read_text())
    n_videos = len(items) + sum("wam" in r for r in items)
    assert len(items) >= 1 and n_videos >= 2  # held-out episode 9 (a success): its AC rollout and its WAM plan
    assert page.count("data:video/webm;base64,") == n_videos
    assert "Training curves" in page and "data:image/png;base64," in page
    text = html.unescape(page)
    assert "flexwm train --data" in text and "\"preset\": \"tiny\"" in text
    assert "25.0%" in page and "[4.6, 69.9]" in page
    # rebuilt from the saved files alone: same videos, no model call needed
    (run / "report.html").unlink()
    again = build_report(run, rollouts=2).read_text()
    assert again.count("data:video/webm;base64,") == n_videos


def test_policy_evaluation_is_described_in_words_never_nan(report):
    """A suite whose real success is the same for every policy has no correlation: the page says so in words."""
    from flexwm.evaluation.policy_eval import compare

    run, _ = report
    rows = [("expert", 0.0, 0.5, 0.6), ("random", 0.0, 0.0, 0.1)]
    stats = compare([r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])
    saved = {"task": "toy", **{k: None if isinstance(v, float) and v != v else v for k, v in stats.items()},
             "policies": [{"name": n, "real": {"rate": r}, "imagined": {"rate": i}, "imagined_mean_max_prob": q}
                          for n, r, i, q in rows]}
    folder = run / "policy-eval-toy"
    folder.mkdir()
    try:
        (folder / "policy_eval.json").write_text(json.dumps(saved))
        page = html.unescape(build_report(run, rollouts=2, out=run / "pe.html").read_text())
    finally:
        shutil.rmtree(folder)
    card = page[page.index("Closed-loop policy evaluation"):page.index("Exact config")]
    card = re.sub(r"data:[^\"']+", "", card)  # embedded images: base64 text may spell anything
    assert "real success is 0% for every policy: no correlation is defined" in card
    assert "nan" not in card.lower() and "n/a" not in card and "0.60" in card  # imagined mean max P(success)


def test_report_of_a_non_run_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a training run"):
        build_report(tmp_path)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make test installs it)")
def test_report_loads_in_headless_chromium(report, tmp_path):
    _, path = report
    common = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--mute-audio",
              "--autoplay-policy=no-user-gesture-required", "--virtual-time-budget=8000",
              f"--user-data-dir={tmp_path / 'profile'}"]
    r = subprocess.run([*common, "--enable-logging=stderr", "--v=0", "--dump-dom", path.as_uri()],
                       capture_output=True, text=True, timeout=120)
    body = re.search(r"<body[^>]*>", r.stdout)
    assert body, r.stderr[-2000:]
    attrs = dict(re.findall(r'data-([a-z-]+)="(\d+)"', body.group(0)))
    assert int(attrs["videos-total"]) >= 2, attrs
    assert attrs["videos-ok"] == attrs["videos-total"] and attrs["videos-failed"] == "0", attrs
    console = [line for line in r.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    shot = tmp_path / "report.png"
    subprocess.run([*common, "--window-size=1200,1800", f"--screenshot={shot}", path.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000


@pytest.mark.slow
def test_kill9_during_report_generation_then_rebuild(report, tmp_path):
    """A report build killed at random moments (rollout videos, page write) leaves no partial file that a rerun
    trusts: the rerun writes a complete page with every video."""
    import os
    import random
    import signal
    import time

    run, _ = report
    work = tmp_path / "run"
    shutil.copytree(run, work, ignore=shutil.ignore_patterns("report", "report.html"))
    cmd = [sys.executable, "-m", "flexwm.cli", "report", str(work), "--rollouts", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = random.Random(1)
    for _ in range(3):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 6.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (work / "report.html").exists():  # a page that exists is complete (written atomically)
            assert (work / "report.html").read_text().rstrip().endswith("</html>")
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
    page = (work / "report.html").read_text()
    items = json.loads((work / "report" / "rollouts.json").read_text())
    assert page.count("data:video/webm;base64,") == len(items) + sum("wam" in r for r in items) >= 2
    assert not list(work.rglob(".*.tmp"))
