"""A static, offline HTML report of a run: `flexwm report RUN_DIR` (and the last step of `flexwm demo`).

Everything is embedded in one file (videos as base64 WebM/VP9, plots as base64 PNG, no external scripts,
fonts or stylesheets), so the page opens anywhere without a network. It is rebuilt from what the run saved:

    RUN/run_config.json, RUN/command.json     the exact config and the commands that produced the run
    RUN/metrics.jsonl                         training curves
    RUN/report/rollouts.json + *.webm         real vs imagined videos (made by `make_rollouts`, cached)
    EVAL/eval-*.json                          real-simulator success per way to act (flexwm eval), latency
    EVAL/policy-eval-*/policy_eval.json + .png closed-loop policy evaluation (flexwm evaluate-policies)
    EVAL/report/eval_videos.json + *.webm     real | imagined-plan videos of evaluation episodes

EVAL is each evaluation output folder given (`flexwm report RUN --results DIR`), by default runs/eval/NAME/
(where flexwm eval writes by default), and the run itself (where older versions and `flexwm demo` write).

A small inline script checks that every video can be decoded and records the result in
`<body data-videos-ok=... data-videos-failed=...>` (used by the browser test); it loads nothing.
"""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from flexwm.errors import ConfigError
from flexwm.evaluation.videos import encode_webm, save_eval_videos, upscale, write_bytes
from flexwm.io import atomic_write_json, atomic_write_text

__all__ = ["build_report", "make_rollouts", "encode_webm", "save_eval_videos"]


# ---- inputs --------------------------------------------------------------------------------------------------


def make_rollouts(run_dir: str | Path, n: int = 3, seed: int = 0, steps: int = 4, scale: int = 3,
                  device: str = "cpu") -> list[dict]:
    """Real vs imagined videos on held-out episodes of the run's data, written to RUN/report/.

    Action-conditioned: the model gets the episode's first frame and its real actions and imagines the rest
    (open loop). Instruction-conditioned (WAM): from the same frame and the episode's instruction, one
    generated chunk per episode is shown with the action chunk it proposes. Cached: reruns reuse the files.
    """
    import torch

    from flexwm.data import FlexDataset
    from flexwm.inference import load_run

    run_dir = Path(run_dir)
    out_dir = run_dir / "report"
    index_path = out_dir / "rollouts.json"
    if index_path.exists():
        return json.loads(index_path.read_text())
    for stale in out_dir.glob(".*.tmp"):  # left by a build killed mid-write
        stale.unlink(missing_ok=True)
    split_path = run_dir / "split.json"
    if not split_path.exists():
        raise ConfigError(f"{run_dir} has no split.json; pass a training run directory (flexwm train --out)")
    split = json.loads(split_path.read_text())
    wm = load_run(run_dir, steps=steps, device=device)
    g = torch.Generator().manual_seed(seed)
    S = wm.frame_stride
    items: list[dict] = []
    for d, held in zip(split["data"], split["heldout"]):
        ds = FlexDataset(d)
        is_held = bool(held)
        if not held:  # a dataset too small to hold any episode out: show training episodes, labelled so
            held = list(range(len(ds)))
        by_outcome: dict[str, list[int]] = {}
        for i in held:
            by_outcome.setdefault(ds.episodes[i]["outcome"], []).append(i)
        picks = [eps[k] for k in range(n) for eps in by_outcome.values() if k < len(eps)][:n]
        for i in picks:
            ep = ds.load_episode(i)
            meta = ds.episodes[i]
            T = (min(ep.length - 1, 64) // S) * S
            if T < S:
                continue
            with torch.no_grad():
                state = wm.encode(ep.frames[None, :1], ep.proprio[None, 0])
                fut = wm.rollout(state, torch.from_numpy(ep.actions[None, :T]), generator=g)
                imagined = wm.decode(fut)[0].numpy()
            real = ep.frames[S : T + 1 : S]
            k = min(len(real), len(imagined))
            side = np.concatenate([real[:k], imagined[:k]], axis=2)  # real | imagined
            name = f"ac-ds{d.__hash__() & 0xffff:04x}-ep{i}.webm"
            write_bytes(out_dir / name, encode_webm(upscale(side, scale), fps=4))
            item = {"kind": "ac", "file": name, "episode": i, "dataset": d, "outcome": meta["outcome"],
                    "task": meta["env_task"], "frames": int(k), "env_steps_per_frame": S, "heldout": is_held}
            instr = meta["instruction"]
            if instr:
                with torch.no_grad():
                    acts, lat = wm.propose(state, instr, n=1, generator=g)
                    plan = wm.decode(lat[0, 0]).numpy()
                first = np.repeat(ep.frames[:1], len(plan), 0)
                wname = name.replace("ac-", "wam-")
                write_bytes(out_dir / wname, encode_webm(upscale(np.concatenate([first, plan], 2), scale),
                                                                 fps=2))
                item["wam"] = {"file": wname, "instruction": instr,
                               "actions": np.round(acts[0, 0].numpy(), 3).tolist()}
            items.append(item)
    atomic_write_json(index_path, items)
    return items


# ---- plots ---------------------------------------------------------------------------------------------------


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _curves(rows: list[dict]) -> str | None:
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("loss", "loss_video", "loss_action", "loss_success", "loss_progress") if k in rows[0]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={"wspace": 0.35})
    steps = [r["step"] for r in rows]
    for k in keys:
        axes[0].plot(steps, [r.get(k, np.nan) for r in rows], label=k, lw=1)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].legend(fontsize=7)
    axes[0].grid(alpha=0.3)
    if "lr" in rows[0]:
        axes[1].plot(steps, [r.get("lr", np.nan) for r in rows], color="k", lw=1)
        axes[1].set_ylabel("learning rate")
        axes[1].set_xlabel("step")
        axes[1].grid(alpha=0.3)
    return _png(fig)


# ---- the page ------------------------------------------------------------------------------------------------

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>flexwm report: {{ name }}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;
color:#1d1d1f;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:right}th{background:#f5f5f7}td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:1.2em}.card{border:1px solid #e3e3e3;border-radius:6px;padding:.6em}
.card p{margin:.3em 0;font-size:.85em;max-width:420px}video{image-rendering:pixelated;display:block}
pre{background:#f5f5f7;padding:.8em;overflow:auto;font-size:.8em;max-height:28em}
.note{color:#555;font-size:.9em}img{max-width:100%}
</style></head>
<body data-videos-ok="0" data-videos-failed="0" data-videos-total="{{ n_videos }}">
<h1>flexwm report: {{ name }}</h1>
<p class="note">Built {{ built }} from <code>{{ run_dir }}</code>. Success rates are from the real simulator;
videos labelled <em>imagined</em> come from the world model. Intervals are 95% Wilson intervals.</p>

{% if rollouts %}
<h2>Action-conditioned simulation: real (left) vs imagined (right)</h2>
<p class="note">The model sees only the first real frame and the episode's real actions (open loop, held-out
episodes unless marked); each frame is {{ rollouts[0].env_steps_per_frame }} environment steps.</p>
<div class="grid">{% for r in rollouts %}<div class="card">
<video controls loop muted autoplay playsinline src="data:video/webm;base64,{{ r.data }}"></video>
<p><b>{{ r.task }}</b>, {{ r.outcome }} episode {{ r.episode }}, {{ r.frames }} frames
{% if r.heldout is defined and not r.heldout %}(a <em>training</em> episode: the dataset holds none out){% endif %}</p>
</div>{% endfor %}</div>
{% if wam %}<h2>Generated plans (WAM mode): start frame (left) vs imagined chunk (right)</h2>
<div class="grid">{% for r in wam %}<div class="card">
<video controls loop muted autoplay playsinline src="data:video/webm;base64,{{ r.data }}"></video>
<p>"{{ r.instruction }}"</p><p class="note">first proposed actions: {{ r.actions[:2] }}</p></div>{% endfor %}</div>
{% endif %}{% endif %}

{% if eval_videos %}<h2>Acting in the real simulator: real rollout (left) beside the model's imagined plan (right)</h2>
<div class="grid">{% for r in eval_videos %}<div class="card">
<video controls loop muted autoplay playsinline src="data:video/webm;base64,{{ r.data }}"></video>
<p><b>{{ r.policy }}</b> on {{ r.task }}, episode {{ r.episode }}: {{ r.frames }} frames, {{ r.plans }} plans</p>
</div>{% endfor %}</div>{% endif %}

{% if evals %}<h2>Success in the real simulator, per way to act</h2>
<table><tr><th>policy</th><th>tasks</th><th>episodes</th><th>success</th><th>95% CI</th><th>avg over tasks</th>
<th>latency / plan</th><th>instructions</th><th>file</th></tr>
{% for e in evals %}<tr><td>{{ e.policy }}</td><td>{{ e.n_tasks }}</td><td>{{ e.episodes }}</td>
<td>{{ e.rate }}</td><td>{{ e.ci }}</td><td>{{ e.avg }}</td><td>{{ e.latency }}</td><td>{{ e.instructions }}</td>
<td>{{ e.file }}</td></tr>{% endfor %}</table>
{% for e in evals %}<details><summary>{{ e.policy }}: per task</summary><table>
<tr><th>task</th><th>success</th><th>95% CI</th><th>latency / plan</th></tr>
{% for t in e.tasks %}<tr><td>{{ t.task }}</td><td>{{ t.rate }}</td><td>{{ t.ci }}</td><td>{{ t.latency }}</td></tr>
{% endfor %}</table></details>{% endfor %}{% endif %}

{% if policy_evals %}<h2>Closed-loop policy evaluation: real vs imagined success</h2>
{% for p in policy_evals %}<div class="card"><p><b>{{ p.name }}</b>: {{ p.summary }}</p>{% if p.png %}
<img alt="real vs imagined success" src="data:image/png;base64,{{ p.png }}">{% endif %}
<table><tr><th>policy</th><th>real</th><th>imagined</th><th>imagined mean max P(success)</th></tr>
{% for row in p.rows %}<tr><td>{{ row[0] }}</td><td>{{ row[1] }}</td><td>{{ row[2] }}</td><td>{{ row[3] }}</td></tr>
{% endfor %}</table></div>{% endfor %}{% endif %}

{% if curves %}<h2>Training curves</h2><img alt="training curves" src="data:image/png;base64,{{ curves }}">
{% endif %}

<h2>Exact config and commands</h2>
{% if commands %}<pre>{% for c in commands %}{{ c.time }}  {{ c.argv }}
{% endfor %}</pre>{% endif %}
<pre>{{ config }}</pre>

<script>
(function () {
  var vids = document.querySelectorAll("video"), ok = 0, bad = 0;
  function done(good) { if (good) { ok++; } else { bad++; }
    document.body.dataset.videosOk = ok; document.body.dataset.videosFailed = bad; }
  vids.forEach(function (v) {
    if (v.readyState >= 2) { done(true); return; }
    v.addEventListener("loadeddata", function () { done(true); }, {once: true});
    v.addEventListener("error", function () { done(false); }, {once: true});
  });
})();
</script>
</body></html>
"""


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _ci(ci: Any) -> str:
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "n/a"


def _prob(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.2f}"


def _ms(s: float | None) -> str:
    return "n/a" if s is None else f"{1000 * s:.0f} ms"


def _evals(run_dir: Path) -> list[dict]:
    out = []
    for path in sorted(run_dir.glob("eval-*.json")):
        try:
            r = json.loads(path.read_text())
            tasks = []
            for t, v in r["per_task"].items():
                tasks.append({"task": t, "rate": _pct(v["summary"]["rate"]), "ci": _ci(v["summary"]["ci95"]),
                              "latency": _ms(v.get("latency", {}).get("mean_s"))})
            lat = [v.get("latency", {}).get("mean_s") for v in r["per_task"].values()]
            lat = [x for x in lat if x is not None]
            out.append({"policy": r["policy"], "n_tasks": len(r["per_task"]), "episodes": r["pooled"]["episodes"],
                        "rate": _pct(r["pooled"]["rate"]), "ci": _ci(r["pooled"]["ci95"]),
                        "avg": _pct(r.get("average_over_tasks")), "latency": _ms(float(np.mean(lat)) if lat else None),
                        "instructions": r.get("instructions", ""), "file": path.name, "tasks": tasks})
        except (ValueError, KeyError, TypeError) as e:
            out.append({"policy": f"(unreadable: {e})", "n_tasks": 0, "episodes": 0, "rate": "", "ci": "",
                        "avg": "", "latency": "", "instructions": "", "file": path.name, "tasks": []})
    return out


def _policy_evals(run_dir: Path) -> list[dict]:
    from flexwm.evaluation.policy_eval import describe_correlation

    out = []
    for d in sorted(run_dir.glob("policy-eval-*")):
        res_path = d / "policy_eval.json"
        if not res_path.exists():
            continue
        r = json.loads(res_path.read_text())
        png = next(iter(sorted(d.glob("*.png"))), None)
        rows = [(p["name"], _pct(p["real"]["rate"]), _pct(p["imagined"]["rate"]),
                 _prob(p.get("imagined_mean_max_prob"))) for p in r.get("policies", [])]
        out.append({"name": d.name, "summary": describe_correlation(r), "n": len(rows), "rows": rows,
                    "png": base64.b64encode(png.read_bytes()).decode() if png else None})
    return out


def build_report(run_dir: str | Path, out: str | Path | None = None, *, rollouts: int = 3,
                 progress: bool = True, results: list[str | Path] | None = None, device: str = "cpu") -> Path:
    """Write RUN/report.html (or `out`) from the run's saved results. Returns the path.

    Evaluations are read from the run itself and from each folder in `results` (the --out folders of flexwm
    eval / evaluate-policies); by default from runs/eval/NAME/ when it exists (flexwm.runs.results_dir)."""
    import jinja2

    from flexwm.config import check_device
    from flexwm.metrics import read_metrics
    from flexwm.runs import results_dir

    check_device(device)
    run_dir = Path(run_dir)
    if not (run_dir / "run_config.json").exists():
        raise ConfigError(f"{run_dir} is not a training run (no run_config.json); pass the --out of flexwm train")
    if results is None:
        results = [results_dir(run_dir)] if results_dir(run_dir).is_dir() else []
    missing = [str(r) for r in results if not Path(r).is_dir()]
    if missing:
        raise ConfigError(f"--results {missing}: no such folder; pass the --out folders of flexwm eval")
    sources = [run_dir] + [Path(r) for r in results if Path(r).resolve() != run_dir.resolve()]
    items = make_rollouts(run_dir, n=rollouts, device=device) if rollouts > 0 else []
    b64 = lambda name, d=run_dir: base64.b64encode((d / "report" / name).read_bytes()).decode()  # noqa: E731
    ac = [{**r, "data": b64(r["file"])} for r in items]
    wam = [{**r["wam"], "data": b64(r["wam"]["file"])} for r in items if "wam" in r]
    eval_videos = []
    for d in sources:
        ev_index = d / "report" / "eval_videos.json"
        if ev_index.exists():
            eval_videos += [{**v, "data": b64(v["file"], d)} for v in json.loads(ev_index.read_text())]
    metrics = run_dir / "metrics.jsonl"
    commands = json.loads((run_dir / "command.json").read_text()) if (run_dir / "command.json").exists() else []
    page = jinja2.Environment(autoescape=True).from_string(_TEMPLATE).render(
        name=run_dir.name, run_dir=str(run_dir), built=time.strftime("%Y-%m-%d %H:%M"),
        rollouts=ac, wam=wam, eval_videos=eval_videos, n_videos=len(ac) + len(wam) + len(eval_videos),
        evals=[e for d in sources for e in _evals(d)], policy_evals=[p for d in sources for p in _policy_evals(d)],
        curves=_curves(read_metrics(metrics)) if metrics.exists() else None,
        commands=[{"time": c["time"], "argv": " ".join(c["argv"])} for c in commands],
        config=json.dumps(json.loads((run_dir / "run_config.json").read_text()), indent=2))
    path = Path(out) if out else run_dir / "report.html"
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    atomic_write_text(path, page)
    return path
