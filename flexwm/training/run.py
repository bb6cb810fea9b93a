"""Training the flexible world model from datasets: the runner behind `flexwm train`.

    datasets -> frame tokenizer (trained here or reused) -> latent caches (memory-mapped) -> instruction
    embeddings (cached per string) -> window index -> Trainer(FlexWorldModel, flex_loss)

Everything the run needs is saved in the run directory, so `--resume` continues after a crash and evaluation
can rebuild the exact model, tokenizer and text encoder:

    RUN/run_config.json        the fully resolved RunConfig
    RUN/tokenizer/             model.safetensors + config.json of the frame tokenizer
    RUN/latents/ds{i}/         latent cache of dataset i (sharded .npy + manifest.json)
    RUN/text_cache.safetensors instruction embeddings
    RUN/split.json             held-out episodes per dataset (never trained on)
    RUN/checkpoints/step-*/    world-model checkpoints (config.json there is this run config)
    RUN/metrics.jsonl          training curves
    RUN/tensorboard/           the same curves (and the tokenizer's under tokenizer/) as TensorBoard event files,
                               only when asked for (`flexwm train --tensorboard`)
    RUN/summary.json           written when the last step is reached: step, wall time, final losses
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flexwm.config import field, from_dict, to_dict, validate
from flexwm.errors import ConfigError, DatasetError
from flexwm.io import atomic_write_json
from flexwm.metrics import MetricsLogger, TensorBoardLog, check_tensorboard, truncate_metrics
from flexwm.models import flow
from flexwm.models import text as text_mod
from flexwm.models import tokenizer as tok_mod
from flexwm.models import world_model as wm_mod
from flexwm.runs import find_latest
from flexwm.training.distributed import Shard, check_launch
from flexwm.training.loop import TrainConfig, Trainer, ddp_setup


@dataclass
class EpisodeFilter:
    """Which of the training episodes (those not held out) a run trains on; empty keeps them all."""

    sources: list[str] = field(default_factory=list,
                               help="keep only these sources (expert, noisy, play, random, ...); empty: all")
    outcomes: list[str] = field(default_factory=list,
                                help="keep only these outcomes (success, failure, play, unlabelled); empty: all")
    per_task: int | None = field(None, ge=1, help="then keep the first N episodes of each task (by episode index)")

    def __post_init__(self) -> None:
        validate(self)
        bad = [o for o in self.outcomes if o not in flow.OUTCOME_CODES]
        if bad:
            raise ConfigError(f"train_episodes.outcomes has unknown outcome(s) {bad}; use {list(flow.OUTCOME_CODES)}")

    def apply(self, episodes: list[dict[str, Any]], train: list[int]) -> list[int]:
        keep = [i for i in train if (not self.sources or episodes[i].get("source") in self.sources)
                and (not self.outcomes or episodes[i].get("outcome") in self.outcomes)]
        if self.per_task is None:
            return keep
        seen: dict[str, int] = {}
        out = []
        for i in keep:
            task = episodes[i].get("env_task") or episodes[i].get("instruction") or ""
            if seen.get(task, 0) < self.per_task:
                seen[task] = seen.get(task, 0) + 1
                out.append(i)
        return out


@dataclass
class RunConfig:
    preset: str = field("cpu", choices=("tiny", "demo", "cpu", "gpu"))
    data: list[str] = field(default_factory=list, help="dataset directories (LeRobot v3 layout)")
    camera: str | None = field(None, help="camera (video feature) to read from datasets that have several")
    action_key: str | None = field(None, help="action feature of datasets flexwm did not write (default: action)")
    state_key: str | None = field(None, help="proprio feature of datasets flexwm did not write (default: "
                                             "observation.state)")
    resize: int | None = field(None, help="scale every dataset's frames to this square size when decoding "
                                          "(datasets from the hub are often 480x640)")
    outcome: str | None = field(
        None, help="outcome of episodes without flexwm labels: labels | unlabelled | success-column | last-frame | "
                   "success (flexwm.data.plain)")
    seed: int = 0
    device: str = "cpu"
    tokenizer: tok_mod.TokenizerConfig = field(default_factory=lambda: tok_mod.preset("cpu"))
    tokenizer_path: str | None = field(None, help="reuse a trained tokenizer directory instead of training one")
    latent_dir: str | None = field(
        None, help="keep the latent caches here (shared by runs that use the same tokenizer) instead of RUN/latents")
    init_from: str | None = field(
        None, help="start from this checkpoint or run directory (its architecture; new embodiments get adapters)")
    finetune: str = field("all", choices=("all", "adapters"),
                          help="with init_from: train everything, or only the data's embodiment adapters")
    tokenizer_steps: int = field(3000, ge=0)
    tokenizer_batch: int = field(64, ge=1)
    tokenizer_max_seconds: float | None = field(None, help="time bound for tokenizer training")
    text: text_mod.TextEncoderConfig = field(default_factory=lambda: text_mod.preset("cpu"))
    model: wm_mod.WorldModelConfig = field(default_factory=lambda: wm_mod.preset("cpu"))
    train: TrainConfig = field(default_factory=TrainConfig)
    paraphrase_prob: float = field(0.5, ge=0.0, le=1.0, help="P(a success window uses a training paraphrase)")
    heldout_every: int = field(10, ge=2, help="every k-th episode of each dataset is held out (0-based k-1)")
    window_stride: int = field(1, ge=1, help="step between window start times")
    train_episodes: EpisodeFilter = field(
        default_factory=EpisodeFilter,
        help="train on a subset of the training episodes, e.g. --set train_episodes.sources=[expert] --set "
             "train_episodes.per_task=10 (held-out episodes stay the same)")


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(tokenizer=dataclasses.asdict(tok_mod.preset("tiny")), tokenizer_steps=60, tokenizer_batch=32,
                 text=dataclasses.asdict(text_mod.preset("tiny")), model=dataclasses.asdict(wm_mod.preset("tiny")),
                 train=dict(steps=30, batch_size=16, lr=1e-3, warmup_steps=5, ckpt_every=10, log_every=5,
                            ema_decay=0.9)),
    # `flexwm demo`'s shipped checkpoint: a few MB, trains in ~10 minutes on 2 CPU cores
    "demo": dict(tokenizer=dataclasses.asdict(tok_mod.preset("cpu")), tokenizer_steps=1500,
                 tokenizer_max_seconds=180.0, text=dataclasses.asdict(text_mod.preset("cpu")),
                 model=dataclasses.asdict(wm_mod.preset("cpu", d_model=128, n_layers=3, n_heads=4,
                                                        video_residual=True)),  # as the shipped checkpoint
                 train=dict(steps=2000, batch_size=32, lr=1e-3, warmup_steps=100, ckpt_every=500, log_every=25,
                            ema_decay=0.995)),
    "cpu": dict(tokenizer=dataclasses.asdict(tok_mod.preset("cpu")), tokenizer_steps=3000,
                tokenizer_max_seconds=480.0, text=dataclasses.asdict(text_mod.preset("cpu")),
                model=dataclasses.asdict(wm_mod.preset("cpu")),
                train=dict(steps=4000, batch_size=32, lr=5e-4, warmup_steps=200, ckpt_every=250, log_every=25,
                           ema_decay=0.999)),
    "gpu": dict(tokenizer=dataclasses.asdict(tok_mod.preset("gpu")), tokenizer_steps=20000, tokenizer_batch=256,
                text=dataclasses.asdict(text_mod.preset("gpu")), model=dataclasses.asdict(wm_mod.preset("gpu")),
                device="cuda", train=dict(steps=50000, batch_size=256, lr=3e-4, warmup_steps=1000,
                                          ckpt_every=2000, log_every=100, amp="bf16", device="cuda")),
}


def preset(name: str, **overrides: Any) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {list(PRESETS)}")
    merged = {**PRESETS[name], "preset": name}
    for k, v in overrides.items():
        merged[k] = {**merged[k], **v} if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return from_dict(RunConfig, merged)


def run_config(preset_name: str = "cpu", *, data: list[str] | None = None, variant: str | None = None,
               config_file: str | Path | None = None, overrides: list[str] = (), steps: int | None = None,
               seed: int | None = None, device: str | None = None, camera: str | None = None,
               outcome: str | None = None, resize: int | None = None, action_key: str | None = None,
               state_key: str | None = None) -> RunConfig:
    """The RunConfig of `flexwm train`: the preset, then the fields of `config_file` (JSON/YAML), then the
    arguments (data, variant, device: the run's, its training loop's and its text encoder's; seed; steps), then
    `--set` overrides (`flexwm.config.apply_overrides`)."""
    import yaml

    from flexwm.config import apply_overrides, merge

    merged: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        merged = yaml.safe_load(path.read_text()) or {}
        if not isinstance(merged, dict):
            raise ConfigError(f"{path} must hold a mapping of RunConfig fields")
    args: dict[str, Any] = {}
    if data:
        args["data"] = [str(d) for d in data]
    if variant is not None:
        args["model"] = {"variant": variant}
    if device is not None:
        args.update(device=device, train={"device": device}, text={"device": device})
    if seed is not None:
        args["seed"] = seed
    if steps is not None:
        args.setdefault("train", {})["steps"] = steps
    args.update({k: v for k, v in (("camera", camera), ("outcome", outcome), ("resize", resize),
                                   ("action_key", action_key), ("state_key", state_key)) if v is not None})
    cfg = preset(preset_name, **merge(merged, args))
    return apply_overrides(cfg, list(overrides)) if overrides else cfg


def check_run_devices(cfg: RunConfig) -> None:
    """A clear ConfigError (naming the fix) when the config asks for a device this machine lacks, e.g. preset gpu
    on a machine without CUDA."""
    from flexwm.config import check_device

    for key, dev in (("device", cfg.device), ("train.device", cfg.train.device), ("text.device", cfg.text.device)):
        check_device(dev, f"config key {key!r} of preset {cfg.preset!r}:")


# ---- data preparation --------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """Everything the batch function needs, held in memory (latents stay memory-mapped)."""

    datasets: list
    caches: list
    columns: list[list[dict[str, np.ndarray]]]  # [dataset][episode] -> action/proprio/success arrays
    index: np.ndarray  # (N, 3) (dataset, episode, t) training windows
    text_table: torch.Tensor  # (K, 384) embeddings of every instruction / paraphrase
    text_rows: list[list[list[int]]]  # [dataset][episode] -> candidate rows of text_table ([] = none)
    heldout: list[list[int]]
    latent_shape: tuple[int, int, int]  # from the tokenizer at the datasets' image size


def _split(n_episodes: int, every: int) -> tuple[list[int], list[int]]:
    held = [i for i in range(n_episodes) if i % every == every - 1]
    return [i for i in range(n_episodes) if i % every != every - 1], held


def _train_paraphrases(task: str) -> list[str]:
    """Training paraphrases of a known task; none for a task flexwm has no instructions for."""
    from flexwm.envs.instructions import paraphrases
    from flexwm.errors import EnvError

    try:
        return paraphrases(task, "train")
    except EnvError:
        return []


def resolve_tokenizer(cfg: RunConfig) -> RunConfig:
    """A fine-tuning run (init_from) uses the tokenizer of the run it starts from unless told otherwise."""
    if not cfg.init_from or cfg.tokenizer_path:
        return cfg
    src = Path(cfg.init_from)
    cands = [src / "tokenizer", src.parent.parent / "tokenizer"]  # a run directory, or RUN/checkpoints/step-N
    found = next((c for c in cands if (c / "model.safetensors").exists()), None)
    if found is None:
        raise ConfigError(f"init_from {src} has no tokenizer next to it; set tokenizer_path to the tokenizer "
                          "its latents were made with")
    return dataclasses.replace(cfg, tokenizer_path=str(found))


def prepare(cfg: RunConfig, run_dir: Path, progress: bool = True,
            tokenizer_log: TensorBoardLog | None = None) -> tuple[Prepared, Any, Any]:
    from flexwm.data import FlexDataset
    from flexwm.models.latent_cache import build_latent_cache

    if not cfg.data:
        raise ConfigError("no training data: pass --data DIR (one or more dataset directories)")
    datasets = [FlexDataset(d, camera=cfg.camera, outcome=cfg.outcome, image_size=cfg.resize,
                            action_key=cfg.action_key, state_key=cfg.state_key) for d in cfg.data]
    for d, ds in zip(cfg.data, datasets):
        if len(ds) == 0:
            raise DatasetError(f"dataset {d} has no episodes; collect some first (flexwm collect ... --out {d})")
    splits = [_split(len(ds), cfg.heldout_every) for ds in datasets]
    splits = [(cfg.train_episodes.apply(ds.episodes, tr), held) for ds, (tr, held) in zip(datasets, splits)]
    if not any(tr for tr, _ in splits):
        raise DatasetError(f"train_episodes {to_dict(cfg.train_episodes)} keeps no training episode of {cfg.data}; "
                           "`flexwm data info DIR` lists the sources, outcomes and tasks there are")

    if cfg.model.variant == "wam-only":
        n_succ = sum(ep["outcome"] == "success" for ds, (tr, _) in zip(datasets, splits) for i, ep in
                     enumerate(ds.episodes) if i in set(tr))
        if n_succ == 0:
            raise DatasetError("the wam-only variant trains on successes only, but the training episodes of "
                               f"{cfg.data} hold no success; collect expert data (flexwm collect --source expert), "
                               "or declare the "
                               "outcome of a dataset flexwm did not write (--outcome success)")

    # frame tokenizer: reuse, resume from the run directory, or train on the training episodes
    cfg = resolve_tokenizer(cfg)
    tok_dir = Path(cfg.tokenizer_path) if cfg.tokenizer_path else run_dir / "tokenizer"
    if cfg.tokenizer.pretrained and cfg.tokenizer.kind == "conv_vae":
        raise ConfigError("config key 'tokenizer.pretrained' is for a diffusers VAE; also set "
                          "tokenizer.kind=diffusers:wan (a trained flexwm tokenizer is reused with tokenizer_path)")
    if (tok_dir / "model.safetensors").exists():
        tokenizer = tok_mod.FrameTokenizer.from_pretrained(tok_dir)
    elif cfg.tokenizer_path:
        raise ConfigError(f"tokenizer_path {tok_dir} holds no model.safetensors")
    elif cfg.tokenizer.kind != "conv_vae":  # a diffusers VAE: used frozen, saved into the run as it is
        tokenizer = tok_mod.load_tokenizer(cfg.tokenizer)
        tokenizer.save_pretrained(tok_dir)
    else:
        episodes = [ds.load_episode(i).frames for ds, (tr, _) in zip(datasets, splits) for i in tr]
        tokenizer, _ = tok_mod.train_tokenizer(np.concatenate(episodes), cfg.tokenizer, steps=cfg.tokenizer_steps,
                                               batch_size=cfg.tokenizer_batch, device=cfg.device, seed=cfg.seed,
                                               max_seconds=cfg.tokenizer_max_seconds, progress=progress,
                                               log_fn=None if tokenizer_log is None else
                                               lambda r: tokenizer_log.log(r["step"], "tokenizer/", **{
                                                   k: v for k, v in r.items() if k != "step"}))
        tokenizer.save_pretrained(tok_dir)
    tokenizer = tokenizer.to(cfg.device).eval()
    lat_root = Path(cfg.latent_dir) if cfg.latent_dir else run_dir / "latents"
    if cfg.latent_dir and not cfg.tokenizer_path:
        raise ConfigError("latent_dir shares latent caches between runs, so it needs the tokenizer they were made "
                          "with: also set tokenizer_path")
    if cfg.latent_dir:  # a shared cache is extended with new episodes, never re-encoded by another tokenizer
        for k in range(len(datasets)):
            man = lat_root / f"ds{k}" / "manifest.json"
            old = json.loads(man.read_text())["tokenizer"]["fingerprint"] if man.exists() else None
            if old is not None and old != tokenizer.fingerprint():
                raise ConfigError(f"latent_dir {man.parent} was made by tokenizer {old}, not by {tok_dir} "
                                  f"({tokenizer.fingerprint()}); use that cache's tokenizer or another latent_dir")
    caches = [build_latent_cache(ds, tokenizer, lat_root / f"ds{k}", device=cfg.device, progress=progress)
              for k, ds in enumerate(datasets)]

    # non-video columns, instruction candidates and the window index
    text_enc = text_mod.make_text_encoder(cfg.text, cache_path=run_dir / "text_cache.safetensors")
    strings: dict[str, int] = {}

    def row(s: str) -> int:
        return strings.setdefault(s, len(strings))

    columns, text_rows, index = [], [], []
    for k, (ds, (train_eps, _)) in enumerate(zip(datasets, splits)):
        cols_k, rows_k = [], []
        for i, ep in enumerate(ds.episodes):
            c = ds.load_columns(i)
            cols_k.append({"action": c["action"], "proprio": c["observation.state"], "success": c["next.success"]})
            instr = ep["instruction"]
            cands: list[int] = []
            if instr:
                cands = [row(instr)]
                if ep["outcome"] == "success" and cfg.paraphrase_prob > 0:
                    cands += [row(p) for p in _train_paraphrases(ep["env_task"]) if p != instr]
            rows_k.append(cands)
        columns.append(cols_k)
        text_rows.append(rows_k)
        for i in train_eps:
            T = len(cols_k[i]["action"])
            for t in range(0, max(T - 1, 0), cfg.window_stride):  # pad_end: the last windows are masked
                index.append((k, i, t))
    if not index:
        raise DatasetError(f"no training windows in {cfg.data}: episodes are too short or all held out")
    text_table = text_enc.embed(list(strings)) if strings else torch.zeros(0, cfg.model.text_dim)
    if hasattr(text_enc, "save_cache"):
        text_enc.save_cache()
    prep = Prepared(datasets=datasets, caches=caches, columns=columns, index=np.asarray(index, dtype=np.int64),
                    text_table=text_table, text_rows=text_rows, heldout=[held for _, held in splits],
                    latent_shape=tuple(caches[0].latent_shape))
    return prep, tokenizer, text_enc


def make_batch_fn(prep: Prepared, cfg: RunConfig, shard: Shard | None = None) -> Any:
    """indices -> list of per-embodiment sub-batches (each a flex_loss batch dict).

    With `shard` (processes started by torchrun) the indices are the step's global batch and each sub-batch holds
    only this process's rows of it, plus `group_outcome`: the outcome codes of all its rows (`loss_fn` draws the
    modes of the whole sub-batch from them). Instructions are chosen for every row, so the choices match one process.
    """
    from flexwm.models.latent_cache import get_windows

    mcfg = cfg.model
    H, C, S = mcfg.action_horizon, mcfg.context_frames, mcfg.frame_stride
    rng = np.random.default_rng(cfg.seed + 17)
    dev = cfg.device

    def one_group(rows_all: np.ndarray, embodiment: str) -> dict:
        text_all = np.full(len(rows_all), -1)
        for r, (d, i, _) in enumerate(rows_all):
            cands = prep.text_rows[d][i]
            if cands:
                use_para = len(cands) > 1 and rng.random() < cfg.paraphrase_prob
                text_all[r] = cands[rng.integers(1, len(cands))] if use_para else cands[0]
        outcome_all = [flow.OUTCOME_CODES[prep.datasets[d].episodes[i]["outcome"]] for d, i, _ in rows_all]
        own = slice(None) if shard is None else shard.rows(len(rows_all))
        rows, text_idx, outcome = rows_all[own], text_all[own], outcome_all[own]
        lat = get_windows(prep.caches, rows, C, H, S)
        B = len(rows)
        A = prep.datasets[rows_all[0, 0]].action_dim
        actions = np.zeros((B, H, A), np.float32)
        valid = np.zeros((B, H), bool)
        proprio = np.zeros((B, prep.datasets[rows_all[0, 0]].proprio_dim), np.float32)
        success = np.zeros(B, np.float32)
        progress = np.zeros(B, np.float32)
        for r, (d, i, t) in enumerate(rows):
            c = prep.columns[d][i]
            T = len(c["action"])
            n = min(H, T - t)
            actions[r, :n] = c["action"][t : t + n]
            valid[r, :n] = True
            proprio[r] = c["proprio"][t]
            end = min(t + H, T) - 1  # the last action inside the window
            success[r] = float(c["success"][: end + 1].any())
            first = np.flatnonzero(c["success"])
            progress[r] = min(1.0, (end + 1) / (first[0] + 1)) if len(first) else 0.0
        for name, arr in (("action", actions), ("proprio", proprio), ("latent", lat["context"]),
                          ("latent", lat["future"])):
            if not np.isfinite(arr).all():
                r = int(np.argwhere(~np.isfinite(arr))[0][0])
                d, i, t = (int(v) for v in rows[r])
                raise DatasetError(f"non-finite {name} values in the training window at step {t} of episode {i} of "
                                   f"{cfg.data[d]}; check it with `flexwm data verify {cfg.data[d]}` (and delete the "
                                   "run's latents/ directory if the latent cache is damaged)")
        has_text = torch.from_numpy(text_idx >= 0)
        text = torch.zeros(B, mcfg.text_dim)
        if bool(has_text.any()):
            text[has_text] = prep.text_table[torch.from_numpy(text_idx[text_idx >= 0])].float()
        t = lambda x: torch.from_numpy(x).to(dev)  # noqa: E731
        group = {"context": t(lat["context"]), "future": t(lat["future"]), "actions": t(actions), "valid": t(valid),
                 "future_valid": t(lat["valid"]) & t(valid[:, S - 1 :: S]), "proprio": t(proprio),
                 "text": text.to(dev), "has_text": has_text.to(dev), "success": t(success),
                 "progress": t(progress), "outcome": torch.tensor(outcome, dtype=torch.long), "embodiment": embodiment}
        if shard is not None:
            group["group_outcome"] = torch.tensor(outcome_all, dtype=torch.long)
        return group

    def make_batch(indices: torch.Tensor) -> list[dict]:
        rows = prep.index[indices.numpy()]
        embs = np.array([prep.datasets[d].embodiment for d in rows[:, 0]])
        return [one_group(rows[embs == e], str(e)) for e in sorted(set(embs.tolist()))]

    return make_batch


def loss_fn(net: torch.nn.Module, groups: list[dict], generator: torch.Generator,
            shard: Shard | None = None) -> tuple[torch.Tensor, dict]:
    """flex_loss summed over per-embodiment groups, weighted by group size (= the mean over the batch). With
    `shard`, the groups hold this process's rows (`make_batch_fn`) and modes are drawn for all rows."""
    model = getattr(net, "module", net)
    codes_of = lambda g: g.get("group_outcome", g["outcome"])  # noqa: E731
    total = sum(len(codes_of(g)) for g in groups)
    loss, metrics = 0.0, {}
    for g in groups:
        codes = codes_of(g)
        modes = flow.sample_modes(len(codes), codes, model.cfg, generator)
        lg, mg = flow.flex_loss(_Forward(net, model), g, modes, generator, shard=shard)
        w = len(codes) / total
        loss = loss + w * lg
        for k, v in mg.items():
            metrics[k] = metrics.get(k, 0.0) + (w * v if k.startswith("loss") else v)
    return loss, metrics


class _Forward:
    """Calls go through the (possibly DDP-wrapped) net so gradients are synchronised; attributes come from the
    underlying model."""

    def __init__(self, net: torch.nn.Module, model: torch.nn.Module):
        self._net, self._model = net, model

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._net(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


# ---- the run -----------------------------------------------------------------------------------------------


# config keys that describe how a model is trained, not what it is: a fine-tuning run may change them
RECIPE_KEYS = ("variant", "mode_weights", "instruction_drop", "proprio_drop", "score_failure_instruction",
               "time_sampling", "logit_normal_mean", "logit_normal_std", "video_loss_weight", "action_loss_weight",
               "success_loss_weight", "progress_loss_weight", "dropout")


def _data_embodiments(cfg: RunConfig, prep: Prepared) -> dict[str, dict[str, int]]:
    embodiments: dict[str, dict[str, int]] = {}
    for ds in prep.datasets:
        spec = {"action_dim": ds.action_dim, "proprio_dim": ds.proprio_dim}
        if embodiments.setdefault(ds.embodiment, spec) != spec:
            raise DatasetError(f"datasets disagree on embodiment {ds.embodiment!r}: {embodiments[ds.embodiment]} "
                               f"vs {spec}; give each embodiment its own name")
    return embodiments


def _set_stats(model: wm_mod.FlexWorldModel, prep: Prepared, embodiments: Any) -> None:
    for emb in embodiments:
        acts = np.concatenate([c["action"] for ds, cols in zip(prep.datasets, prep.columns) if ds.embodiment == emb
                               for c in cols])
        prop = np.concatenate([c["proprio"] for ds, cols in zip(prep.datasets, prep.columns) if ds.embodiment == emb
                               for c in cols])
        lo, hi = np.percentile(acts, 0.5, axis=0), np.percentile(acts, 99.5, axis=0)
        model.set_action_stats(emb, lo, np.maximum(hi, lo + 1e-3))
        model.set_proprio_stats(emb, prop.mean(0), prop.std(0) + 1e-3)


def _init_model(cfg: RunConfig, prep: Prepared, embodiments: dict) -> tuple[wm_mod.FlexWorldModel, RunConfig]:
    """The checkpoint's model (architecture, weights, statistics) with adapters added for new embodiments."""
    src = Path(cfg.init_from)  # type: ignore[arg-type]
    model = wm_mod.FlexWorldModel.from_pretrained(src)
    if tuple(model.cfg.latent_shape) != tuple(prep.latent_shape):
        raise ConfigError(f"init_from {src} works on latents {tuple(model.cfg.latent_shape)} but this run's tokenizer "
                          f"gives {tuple(prep.latent_shape)}; set tokenizer_path to the tokenizer of {src}")
    new = []
    for emb, spec in embodiments.items():
        old = model.cfg.embodiments.get(emb)
        if old is None:
            model.add_embodiment(emb, **spec)
            new.append(emb)
        elif dict(old) != spec:
            raise DatasetError(f"the data's embodiment {emb!r} has {spec} but checkpoint {src} has {dict(old)} for it; "
                               "collect data with the same action/proprio spaces or give the embodiment a new name")
    _set_stats(model, prep, new)  # embodiments the checkpoint knows keep the statistics it was trained with
    mcfg = dataclasses.replace(model.cfg, **{k: getattr(cfg.model, k) for k in RECIPE_KEYS})
    model.cfg = mcfg
    if cfg.finetune == "adapters":
        for p in model.parameters():
            p.requires_grad_(False)
        for emb in embodiments:
            for p in model.adapter_parameters(emb):
                p.requires_grad_(True)
    return model, dataclasses.replace(cfg, model=mcfg)


def build_model(cfg: RunConfig, prep: Prepared) -> tuple[wm_mod.FlexWorldModel, RunConfig]:
    """A model whose embodiments and action/proprio statistics come from the datasets (or from `init_from`)."""
    embodiments = _data_embodiments(cfg, prep)
    if cfg.init_from:
        model, cfg = _init_model(cfg, prep, embodiments)
        validate(cfg)
        return model, cfg
    if cfg.finetune != "all":
        raise ConfigError("config key 'finetune' = 'adapters' needs init_from (a checkpoint to fine-tune)")
    sizes = {tuple(ds.image_size) for ds in prep.datasets}
    if len(sizes) > 1:
        raise DatasetError(f"datasets {cfg.data} have different image sizes {sorted(sizes)}; collect them with "
                           "the same --image-size to train one model")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, embodiments=embodiments,
                                                             latent_shape=prep.latent_shape))
    validate(cfg)
    torch.manual_seed(cfg.seed)
    model = wm_mod.FlexWorldModel(cfg.model, load_pretrained=True)  # a diffusers backbone reads its weights
    _set_stats(model, prep, embodiments)
    if cfg.model.video_residual:
        model.set_video_delta_std(video_delta_std(prep, cfg))
    return model, cfg


def video_delta_std(prep: Prepared, cfg: RunConfig, n: int = 4096) -> np.ndarray:
    """Per-channel std of (future - last context) latents over up to `n` training windows (fixed seed)."""
    from flexwm.models.latent_cache import get_windows

    rng = np.random.default_rng(cfg.seed + 29)
    rows = prep.index[rng.choice(len(prep.index), size=min(n, len(prep.index)), replace=False)]
    lat = get_windows(prep.caches, rows, cfg.model.context_frames, cfg.model.action_horizon, cfg.model.frame_stride)
    delta = lat["future"] - lat["context"][:, -1:]
    delta = delta[lat["valid"]]  # (M, c, h, w) valid future frames
    if len(delta) == 0:
        return np.ones(delta.shape[1], np.float32)
    return delta.transpose(1, 0, 2, 3).reshape(delta.shape[1], -1).std(1).astype(np.float32)


def check_resume_config(run_dir: Path, cfg: RunConfig) -> None:
    saved = run_dir / "run_config.json"
    if saved.exists():
        old = json.loads(saved.read_text())
        new = json.loads(json.dumps(to_dict(cfg)))  # tuples -> lists, as stored
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k != "train")
        if diff:
            raise ConfigError(f"{run_dir} was started with a different config (keys {diff} differ); resume with the "
                              "same settings or choose a new --out")


def train_world_model(cfg: RunConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
                      until: int | None = None, command: list[str] | None = None,
                      tensorboard: bool | str | Path | None = None) -> Path:
    """Run (or resume) a training run. Returns the final checkpoint directory. `command` (argv) is appended to
    RUN/command.json so the report can show how the run was made. `tensorboard` (off by default): also write the
    logged curves as TensorBoard event files, to RUN/tensorboard/ (True) or to the given directory; the
    tokenizer's curves go to its tokenizer/ subfolder when this run trains the tokenizer."""
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.glob("checkpoints/step-*")) and not resume:
        raise ConfigError(f"{run_dir} already holds a training run; pass --resume to continue it or choose a new --out")
    check_run_devices(cfg)
    if tensorboard not in (None, False):
        check_tensorboard()
    check_launch(cfg.train.distributed, command)
    run_dir.mkdir(parents=True, exist_ok=True)
    rank, world, _ = ddp_setup(cfg.train.device, always=cfg.train.distributed == "fsdp")
    if command is not None and rank == 0:
        from flexwm.runs import record_command

        record_command(run_dir, command)
    if world > 1 and rank != 0:
        torch.distributed.barrier()  # rank 0 trains the tokenizer and writes the caches; the others then load them
    cfg = resolve_tokenizer(cfg)
    tb_dir = None if tensorboard in (None, False) or rank != 0 else (
        run_dir / "tensorboard" if tensorboard is True else Path(tensorboard))
    tok_log = None
    if tb_dir is not None and not cfg.tokenizer_path and not (run_dir / "tokenizer" / "model.safetensors").exists():
        tok_log = TensorBoardLog(tb_dir / "tokenizer")
    try:
        prep, _, _ = prepare(cfg, run_dir, progress=progress and rank == 0, tokenizer_log=tok_log)
    finally:
        if tok_log is not None:
            tok_log.close()
    if world > 1 and rank == 0:
        torch.distributed.barrier()
    model, cfg = build_model(cfg, prep)
    if resume:
        check_resume_config(run_dir, cfg)
    if rank == 0:
        atomic_write_json(run_dir / "run_config.json", to_dict(cfg))
        atomic_write_json(run_dir / "split.json", {"data": cfg.data, "heldout": prep.heldout})
    # several processes (torchrun): each reads its rows of every global batch and together they compute the
    # one-process step (flexwm.training.distributed)
    shard = Shard(rank, world) if world > 1 else None
    trainer = Trainer(model, functools.partial(loss_fn, shard=shard), make_batch_fn(prep, cfg, shard),
                      len(prep.index), cfg.train, run_dir, to_dict(cfg), progress=progress, global_batch=world > 1)
    if resume:
        trainer.resume()
    if rank == 0:  # rows logged after the checkpoint we resume from are logged again by this run
        truncate_metrics(run_dir / "metrics.jsonl", trainer.step)
    start, first_step = time.perf_counter(), trainer.step
    # steps after the checkpoint we resume from are logged again: TensorBoard drops what an earlier process
    # logged there, as truncate_metrics does for metrics.jsonl
    tb = TensorBoardLog(tb_dir, purge_step=trainer.step + 1) if tb_dir is not None else None
    with MetricsLogger(run_dir / "metrics.jsonl", tensorboard=tb) as logger:
        trainer.fit(logger, until=until)
    if rank == 0 and trainer.step >= cfg.train.steps:
        write_summary(run_dir, trainer.step, time.perf_counter() - start, trainer.step - first_step)
    return find_latest(run_dir) or run_dir


def write_summary(run_dir: Path, step: int, wall_s: float, steps_this_process: int) -> None:
    """RUN/summary.json once training reached its last step: the step, the wall time of the last process that
    trained (over its steps; earlier interrupted processes are not counted) and the last logged losses."""
    rows = []
    path = run_dir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    tail = [r for r in rows if "loss" in r][-10:]
    keys = sorted({k for r in tail for k in r if k.startswith("loss")})
    atomic_write_json(run_dir / "summary.json", {
        "step": step, "wall_s": wall_s, "steps_timed": steps_this_process,
        "steps_per_s": steps_this_process / wall_s if wall_s > 0 else None,
        "final_losses_mean_last_10_logs": {
            k: float(sum(r[k] for r in tail if k in r) / max(1, sum(k in r for r in tail))) for k in keys}})
