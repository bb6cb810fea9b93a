"""The user docs: generated pages are up to date with the JSON results and the CLI, links resolve, and the
headline table prefers benchmarks/results/headline_cpu.json when it exists."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest


def _repo_root() -> Path:
    here = Path(__file__).resolve()
    for p in here.parents:
        if (p / "pyproject.toml").is_file() and (p / "docs" / "gen.py").is_file():
            return p
    raise RuntimeError(f"no repository root with docs/gen.py above {here}")


ROOT = _repo_root()


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("flexwm_docs_gen", ROOT / "docs" / "gen.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_generated_docs_are_up_to_date(gen):
    stale = [rel for rel, text in gen.render_all(ROOT).items()
             if not (ROOT / rel).is_file() or (ROOT / rel).read_text() != text]
    assert not stale, f"out of date: {stale}; run `python docs/gen.py` and commit the result"


def test_relative_links_resolve():
    link = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
    broken = []
    for f in _doc_files():
        text = re.sub(r"```.*?```", "", f.read_text(), flags=re.S)  # links inside code blocks are not links
        for target in link.findall(text):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            path = target.split("#", 1)[0]
            if path and not (f.parent / path).exists():
                broken.append(f"{f.relative_to(ROOT)} -> {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_docs_speak_about_the_project_not_internal_runs():
    words = re.compile(r"sessions?[ -]?[0-9]|issue [0-9]+|(this|the|a) session", re.I)
    internal = re.compile(r"runs/cpu-|cpu-nr|/work/")
    bad = []
    for f in _doc_files():
        for n, line in enumerate(f.read_text().splitlines(), 1):
            # result files keep their recorded names: citations of them are not run names
            cited = re.sub(r"\[[^\]]*\]\([^)]*benchmarks/results/[^)]*\)|benchmarks/results/\S+", "", line)
            if words.search(line) or internal.search(line) or "flex-ac3" in cited:
                bad.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not bad, "\n".join(bad)


def test_readme_keeps_the_setup_commands_and_stays_short():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    assert len(text.splitlines()) <= 220


def _copy_results(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "benchmarks" / "results", tmp_path / "benchmarks" / "results",
                    ignore=shutil.ignore_patterns("*.png", "*.mp4", "*.safetensors", "*.jsonl"))
    return tmp_path


def test_headline_prefers_headline_cpu_json(gen, tmp_path):
    root = _copy_results(tmp_path)
    rows = []
    for task, k in [("door-open-v3", 3), ("button-press-v3", 4)]:
        rows.append({"model": "flexible", "policy": "wam", "env": "metaworld", "task": task, "episodes": 5,
                     "successes": k, "seconds_per_decision": 0.05})
        rows.append({"model": "wam-only", "policy": "wam", "env": "metaworld", "task": task, "episodes": 5,
                     "successes": 1, "seconds_per_decision": 0.04})
    synthetic = {"rows": rows, "compute": {"train_steps": 100}, "command": "python benchmarks/bench.py "
                 "--prefix runs/cpu-nr", "commit": "abc1234"}
    (root / "benchmarks" / "results" / "headline_cpu.json").write_text(json.dumps(synthetic))
    table = gen.headline_table(gen.Results(root))
    lo, hi = gen.wilson(7, 10)
    assert "| flexible | `wam` | 70.0% | 7/10 | " + f"{100 * lo:.0f}–{100 * hi:.0f}% | 0.050 |" in table
    assert "| `wam-only` | `wam` | 20.0% | 2/10 |" in table
    assert "headline_cpu.json" in table and "bench_cpu.json" not in table
    assert "does not yet beat" not in table  # 70% > 20%: the verdict follows the numbers
    assert gen.headline_rows(gen.Results(root))[2]["command"].endswith("--prefix runs/bench-cpu")


def test_headline_falls_back_to_bench_cpu_json(gen, tmp_path):
    root = _copy_results(tmp_path)
    (root / "benchmarks" / "results" / "headline_cpu.json").unlink(missing_ok=True)
    table = gen.headline_table(gen.Results(root))
    assert "bench_cpu.json" in table and "act_wam-only_10eps.json" in table
    for model in ("flexible", "`wam-only`", "`ac-only`", "behaviour cloning", "random actions"):
        assert f"| {model} |" in table


def test_wilson_matches_the_library():
    from flexwm.evaluation.stats import wilson_interval

    spec = importlib.util.spec_from_file_location("flexwm_docs_gen_w", ROOT / "docs" / "gen.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for k, n in [(0, 33), (10, 33), (41, 110), (50, 50)]:
        assert mod.wilson(k, n) == pytest.approx(wilson_interval(k, n))


def test_headline_page_shows_headline_cpu_json_when_present(gen, tmp_path):
    root = _copy_results(tmp_path)
    rows = [{"model": "flexible", "policy": "wam", "env": "metaworld", "task": "door-open-v3", "episodes": 4,
             "successes": 1, "seconds_per_decision": 0.1}]
    (root / "benchmarks" / "results" / "headline_cpu.json").write_text(json.dumps(
        {"rows": rows, "compute": {"flexible": {"samples": 256000, "flops": 4.0e14}},
         "command": "python benchmarks/bench.py", "commit": "abc1234"}))
    text = gen.page_headline(gen.Results(root))
    assert "## Latest run" in text and "abc1234" in text and "1/4" in text
    assert "| flexible | 256,000 | 400 | 1.00x |" in text  # the compute table
    assert "| door-open-v3 | 1/4 |" in text  # the per-task table
    assert "[`headline_cpu.json`](../../benchmarks/results/headline_cpu.json)" in text
