"""World-model training benchmark.

    python benchmarks/train.py speed --out benchmarks/results/train_speed.json
        training samples/s per preset (synthetic latents, the real model and loss), measured in one run
    python benchmarks/train.py tokenizer --run runs/flex --out benchmarks/results/tokenizer_psnr.json
        reconstruction PSNR of the run's frame tokenizer on its held-out episodes, by outcome
    python benchmarks/train.py ac-error --runs flexible=runs/flex ac-only=runs/ac --out benchmarks/results/ac_error.json
        action-conditioned prediction error on each run's held-out episodes (split.json), by outcome
        (success / failure / play): latent MSE and decoded PSNR after 1, 4 and 16 predicted frames
        (= frame_stride x that many environment steps), open loop from the true first frame.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def speed(presets: list[str], steps: int, threads: int) -> dict:
    from flexwm.models import flow
    from flexwm.models.world_model import FlexWorldModel, preset

    torch.set_num_threads(threads)
    out = {}
    for name in presets:
        cfg = preset(name)
        bs = {"tiny": 16, "cpu": 32, "gpu": 64}[name]
        model = FlexWorldModel(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(0)
        c, h, w = cfg.latent_shape
        emb, spec = next(iter(cfg.embodiments.items()))
        batch = {"context": torch.randn(bs, cfg.context_frames, c, h, w, generator=g),
                 "future": torch.randn(bs, cfg.future_frames, c, h, w, generator=g),
                 "actions": torch.rand(bs, cfg.action_horizon, spec["action_dim"], generator=g) * 2 - 1,
                 "proprio": torch.randn(bs, spec["proprio_dim"], generator=g),
                 "text": torch.randn(bs, 384, generator=g),
                 "has_text": torch.ones(bs, dtype=torch.bool), "success": torch.ones(bs), "progress": torch.ones(bs),
                 "valid": torch.ones(bs, cfg.action_horizon, dtype=torch.bool), "embodiment": emb}
        outcomes = torch.zeros(bs, dtype=torch.long)
        times = []
        for i in range(steps + 2):
            t0 = time.perf_counter()
            loss, _ = flow.flex_loss(model, batch, flow.sample_modes(bs, outcomes, cfg, g), g)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i >= 2:  # warm-up steps excluded
                times.append(time.perf_counter() - t0)
        med = float(np.median(times))
        out[name] = {"batch_size": bs, "params": sum(p.numel() for p in model.parameters()),
                     "tokens": cfg.n_tokens, "median_step_s": med, "samples_per_s": bs / med, "steps_timed": steps}
    return {"threads": threads, "presets": out}


@torch.no_grad()
def ac_error(run_dir: Path, horizons: list[int], starts_per_episode: int, max_episodes: int, seed: int,
             split_from: Path | None = None, zero_noise: bool = False, flow_steps: int = 10) -> dict:
    """Open-loop action-conditioned rollouts from held-out start frames, compared frame by frame with the truth.

    Two baselines on the same windows: `copy_frame` (the current real frame, i.e. nothing moves) and
    `copy_latent` (the current frame through the tokenizer, i.e. nothing moves at the tokenizer's quality).
    Every horizon 1..max(horizons) is recorded (`curve`) for the drift plot; `horizons` are summarised with the
    fraction of windows where the model beats copying and a 95% interval of the mean PSNR gain over copying.
    """
    from flexwm.data import FlexDataset
    from flexwm.inference import load_run
    from flexwm.models.tokenizer import psnr

    wm = load_run(run_dir, steps=flow_steps)
    split = json.loads(((split_from or run_dir) / "split.json").read_text())
    if split_from is not None:  # evaluate on another run's held-out episodes: none may be trained on here
        own = dict(zip(*json.loads((run_dir / "split.json").read_text()).values()))
        for d, held in zip(split["data"], split["heldout"]):
            mine = set(own.get(d, []))
            n_seen = max(mine) + 1 if mine else 0  # every 10th episode is held out, so this bounds what it saw
            clash = sorted(i for i in held if i < n_seen and i not in mine)
            if clash:
                raise SystemExit(f"{run_dir} trained on episodes {clash[:5]} of {d} that {split_from} holds out")
    S, C = wm.frame_stride, wm.model.cfg.context_frames
    n_frames = max(horizons)
    g = torch.Generator().manual_seed(seed)
    rows: dict[str, list[np.ndarray]] = {}  # outcome -> (n_frames, 5) per window
    for d, held in zip(split["data"], split["heldout"]):
        ds = FlexDataset(d)
        taken: dict[str, int] = {}
        for i in held:
            outcome = ds.episodes[i]["outcome"]
            if taken.get(outcome, 0) >= max_episodes:
                continue
            ep = ds.load_episode(i)
            last_start = ep.length - 1 - n_frames * S
            if last_start < 0:
                continue
            taken[outcome] = taken.get(outcome, 0) + 1
            for t0 in np.linspace(0, last_start, starts_per_episode).astype(int):
                ctx_idx = np.clip(t0 - S * np.arange(C - 1, -1, -1), 0, None)
                state = wm.encode(ep.frames[None, ctx_idx], ep.proprio[None, t0])
                acts = torch.from_numpy(ep.actions[None, t0 : t0 + n_frames * S])
                noise = None
                if zero_noise:  # the flow ODE from the noise mean: a deterministic, mean-like prediction
                    cfg = wm.model.cfg
                    n_chunks = -(-acts.shape[1] // cfg.action_horizon)
                    noise = torch.zeros(1, n_chunks, cfg.future_frames, *cfg.latent_shape)
                pred = wm.rollout(state, acts, generator=g, noise=noise)[0].float()  # (n_frames, c, h, w)
                true_frames = ep.frames[t0 + S * np.arange(1, n_frames + 1)]
                true_lat = wm.tokenizer.encode(true_frames).float()
                cur_lat = wm.tokenizer.encode(ep.frames[t0 : t0 + 1]).float()
                dec = wm.tokenizer.decode(pred).float()
                ref = torch.from_numpy(true_frames).permute(0, 3, 1, 2).float() / 127.5 - 1
                cur = torch.from_numpy(ep.frames[t0 : t0 + 1]).permute(0, 3, 1, 2).float() / 127.5 - 1
                cur_dec = wm.tokenizer.decode(cur_lat).float()
                win = np.zeros((n_frames, 5))
                for k in range(n_frames):
                    win[k] = [float((pred[k] - true_lat[k]).pow(2).mean()), psnr(dec[k : k + 1], ref[k : k + 1]),
                              psnr(cur, ref[k : k + 1]), psnr(cur_dec, ref[k : k + 1]),
                              float((cur_lat[0] - true_lat[k]).pow(2).mean())]
                rows.setdefault(outcome, []).append(win)
    result = {}
    for outcome, wins in rows.items():
        arr = np.stack(wins)  # (N, n_frames, 5)
        res: dict = {"windows": len(wins), "episodes": None}
        for k in horizons:
            a = arr[:, k - 1]
            gain = a[:, 1] - a[:, 2]
            half = 1.96 * gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else float("nan")
            res[f"h{k}"] = {"latent_mse": float(a[:, 0].mean()), "psnr_db": float(a[:, 1].mean()),
                            "copy_frame_psnr_db": float(a[:, 2].mean()), "copy_latent_psnr_db": float(a[:, 3].mean()),
                            "copy_latent_mse": float(a[:, 4].mean()),
                            "gain_over_copy_frame_db": float(gain.mean()),
                            "gain_over_copy_frame_ci95": [float(gain.mean() - half), float(gain.mean() + half)],
                            "frac_windows_beating_copy_frame": float((gain > 0).mean()), "n": len(a)}
        res["curve"] = {"psnr_db": arr[:, :, 1].mean(0).tolist(), "copy_frame_psnr_db": arr[:, :, 2].mean(0).tolist(),
                        "latent_mse": arr[:, :, 0].mean(0).tolist()}
        res["episodes"] = len(wins) // max(starts_per_episode, 1)
        result[outcome] = res
    return {"frame_stride": S, "env_steps_per_frame": S, "zero_noise": zero_noise, "flow_steps": flow_steps,
            "by_outcome": result}


def drift_plot(res: dict, path: Path) -> None:
    """PSNR against horizon per outcome, one line per run, copy-frame baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outcomes = sorted({o for r in res["runs"].values() for o in r["by_outcome"]})
    fig, axes = plt.subplots(1, len(outcomes), figsize=(4.2 * len(outcomes), 3.4), sharey=True, squeeze=False)
    for ax, o in zip(axes[0], outcomes):
        base_drawn = False
        for name, r in res["runs"].items():
            c = r["by_outcome"].get(o, {}).get("curve")
            if not c:
                continue
            steps = (np.arange(len(c["psnr_db"])) + 1) * r["env_steps_per_frame"]
            ax.plot(steps, c["psnr_db"], label=name)
            if not base_drawn:
                ax.plot(steps, c["copy_frame_psnr_db"], "k--", label="copy current frame")
                base_drawn = True
        ax.set_title(f"held-out {o}")
        ax.set_xlabel("environment steps ahead")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("decoded PSNR (dB)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tokenizer_psnr(run_dir: Path, max_episodes: int) -> dict:
    from flexwm.data import FlexDataset
    from flexwm.models.tokenizer import ConvAutoencoder, evaluate_psnr

    tok = ConvAutoencoder.from_pretrained(run_dir / "tokenizer")
    split = json.loads((run_dir / "split.json").read_text())
    by_outcome: dict[str, list[np.ndarray]] = {}
    for d, held in zip(split["data"], split["heldout"]):
        ds = FlexDataset(d)
        for i in held:
            o = ds.episodes[i]["outcome"]
            if len(by_outcome.setdefault(o, [])) < max_episodes:
                by_outcome[o].append(ds.load_episode(i).frames)
    out = {o: {"psnr_db": evaluate_psnr(tok, np.concatenate(f)), "episodes": len(f),
               "frames": int(sum(len(x) for x in f))} for o, f in by_outcome.items()}
    return {"run_dir": str(run_dir), "config": json.loads((run_dir / "tokenizer" / "config.json").read_text()),
            "heldout_by_outcome": out}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--presets", default="tiny,cpu")
    s.add_argument("--steps", type=int, default=10)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--out", default="benchmarks/results/train_speed.json")
    k = sub.add_parser("tokenizer")
    k.add_argument("--run", required=True)
    k.add_argument("--max-episodes", type=int, default=20, help="held-out episodes per outcome")
    k.add_argument("--out", default="benchmarks/results/tokenizer_psnr.json")
    a = sub.add_parser("ac-error")
    a.add_argument("--runs", nargs="+", required=True, help="NAME=RUN_DIR")
    a.add_argument("--horizons", default="1,4,16")
    a.add_argument("--starts", type=int, default=3, help="start times per held-out episode")
    a.add_argument("--max-episodes", type=int, default=20, help="held-out episodes per outcome")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", default="benchmarks/results/ac_error.json")
    a.add_argument("--plot", default=None, help="drift plot PNG (default: next to --out)")
    a.add_argument("--split-from", default=None, help="evaluate every run on this run's held-out episodes")
    a.add_argument("--zero-noise", action="store_true", help="deterministic rollouts from zero initial noise")
    a.add_argument("--flow-steps", type=int, default=10)
    args = p.parse_args()
    if args.cmd == "speed":
        res = speed(args.presets.split(","), args.steps, args.threads)
    elif args.cmd == "tokenizer":
        res = tokenizer_psnr(Path(args.run), args.max_episodes)
    else:
        horizons = [int(h) for h in args.horizons.split(",")]
        res = {"seed": args.seed, "runs": {}}
        for spec in args.runs:
            name, _, path = spec.partition("=")
            split_from = Path(args.split_from) if args.split_from else None
            res["runs"][name] = {"run_dir": path, **ac_error(Path(path), horizons, args.starts, args.max_episodes,
                                                             args.seed, split_from, args.zero_noise,
                                                             args.flow_steps)}
        drift_plot(res, Path(args.plot or str(Path(args.out).with_suffix("")) + "_drift.png"))
    print(f"wrote {write_result(args.out, res)}")


if __name__ == "__main__":
    main()
