import os
import socket

import pytest
import torch
from torch import nn

from flexwm.runs import find_latest
from flexwm.training import TrainConfig, Trainer, load_checkpoint
from flexwm.training.checkpoint import CheckpointError

N, D = 64, 8
DATA_X = torch.randn(N, D, generator=torch.Generator().manual_seed(0))
DATA_Y = DATA_X @ torch.randn(D, 1, generator=torch.Generator().manual_seed(1))


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 1))


def make_batch(idx):
    return DATA_X[idx], DATA_Y[idx]


def noisy_loss(model, batch, generator):
    x, y = batch
    x = x + 0.01 * torch.randn(x.shape, generator=generator)  # the loop's own generator: must resume exactly
    loss = ((model(x) - y) ** 2).mean()
    return loss, {"mse": loss.detach()}


def cfg(**kw):
    base = dict(steps=20, batch_size=8, lr=1e-2, warmup_steps=3, ckpt_every=10, log_every=1, ema_decay=0.9)
    return TrainConfig(**{**base, **kw})


def test_resume_continues_the_same_loss_curve(tmp_path):
    full = Trainer(make_model(), noisy_loss, make_batch, N, cfg(), tmp_path / "a", {"x": 1}, progress=False).fit()
    first = Trainer(make_model(), noisy_loss, make_batch, N, cfg(), tmp_path / "b", {"x": 1},
                    progress=False).fit(until=10)
    t = Trainer(make_model(), noisy_loss, make_batch, N, cfg(), tmp_path / "b", {"x": 1}, progress=False)
    assert t.resume() and t.step == 10
    second = t.fit()
    assert first + second == full  # bitwise identical on CPU
    assert sum(full[-5:]) < sum(full[:5])  # it does learn


def test_checkpoint_is_safetensors_and_json_only(tmp_path):
    t = Trainer(make_model(), noisy_loss, make_batch, N, cfg(steps=10), tmp_path, {"x": 1}, progress=False)
    t.fit()
    latest = find_latest(tmp_path)
    files = sorted(p.suffix for p in latest.rglob("*") if p.is_file())
    assert set(files) <= {".safetensors", ".json"}
    from flexwm.io import DIR_MODE, FILE_MODE

    for p in [latest, *latest.rglob("*")]:  # readable by the group/others the umask allows, like any file
        assert p.stat().st_mode & 0o777 == (DIR_MODE if p.is_dir() else FILE_MODE), p
    ck = load_checkpoint(tmp_path)
    assert ck["state"]["step"] == 10 and ck["config"] == {"x": 1}
    torch.save({"a": 1}, latest / "evil.pt")
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(latest)


def test_interrupted_checkpoint_write_leaves_previous_intact(tmp_path, monkeypatch):
    t = Trainer(make_model(), noisy_loss, make_batch, N, cfg(steps=10), tmp_path, {"x": 1}, progress=False)
    t.fit()
    import flexwm.training.checkpoint as ckmod

    def boom(*a, **k):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(ckmod, "flatten_optimizer", boom)
    t.step = 11
    with pytest.raises(KeyboardInterrupt):
        t.save()
    assert find_latest(tmp_path).name == "step-00000010"
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def det_loss(model, batch, generator):
    x, y = batch
    loss = ((model(x) - y) ** 2).mean()
    return loss, {}


def det_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 16), nn.Tanh(), nn.Linear(16, 1))


def _ddp_worker(rank, world, port, out_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    t = Trainer(det_model(), det_loss, make_batch, N, cfg(steps=5, ema_decay=0.0), out_dir, {}, progress=False)
    t.fit()
    if rank == 0:
        torch.save(t.model.state_dict(), os.path.join(out_dir, "ddp_params.pt"))
    torch.distributed.destroy_process_group()


def test_two_process_gloo_ddp_matches_one_process(tmp_path):
    import torch.multiprocessing as tmp_mp

    single = Trainer(det_model(), det_loss, make_batch, N, cfg(steps=5, ema_decay=0.0), tmp_path / "one", {},
                     progress=False)
    single.fit()
    out = tmp_path / "ddp"
    out.mkdir()
    tmp_mp.spawn(_ddp_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    ddp = torch.load(out / "ddp_params.pt", weights_only=True)
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-5, atol=1e-6)
