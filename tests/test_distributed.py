"""Distributed training: sharding, gradient-correct all-gather, and DDP == single process (2 gloo CPU processes)."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch

from h2arn import distributed as D
from h2arn.losses import H2ARNLoss
from h2arn.model import H2ARN, LossConfig, ModelConfig

sys.path.insert(0, str(Path(__file__).parent))

pytestmark = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")

WORLD = 2
D_TXT, D_PCD, L_TXT, L_PCD, N_LINKS = 12, 10, 6, 5, 14
# global batches with odd sizes (uneven shards 4/3, 5/4) and clouds shared across the shard boundary
GLOBAL_BATCHES = [[0, 3, 1, 4, 2, 5, 6], [7, 8, 9, 10, 11, 12, 13, 0, 1], [13, 2, 12, 3, 11, 4, 10]]
PC_OF_LINK = [0, 1, 2, 0, 1, 2, 3, 3, 4, 4, 5, 5, 6, 0]   # link -> cloud id (duplicates = positives)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _set_env(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))


def _data():
    g = torch.Generator().manual_seed(7)
    n_pc = max(PC_OF_LINK) + 1
    pc = torch.randn(n_pc, L_PCD, D_PCD, generator=g)
    pc_mask = torch.ones(n_pc, L_PCD, dtype=torch.bool)
    pc_mask[::2, -2:] = False
    txt = torch.randn(N_LINKS, L_TXT, D_TXT, generator=g)
    txt_mask = torch.ones(N_LINKS, L_TXT, dtype=torch.bool)
    txt_mask[1::3, -3:] = False
    return txt, txt_mask, pc, pc_mask, torch.tensor(PC_OF_LINK)


def _model() -> H2ARN:
    torch.manual_seed(0)
    return H2ARN(ModelConfig(d_txt=D_TXT, d_pcd=D_PCD, d_model=16, nhead=2, num_layers=1, dropout=0.0))


class _NaiveGatheredLoss(torch.nn.Module):
    """The broken pattern: plain dist.all_gather + own slot replaced by the local tensor (no grad all-reduce)."""

    def __init__(self, criterion):
        super().__init__()
        self.criterion = criterion

    def forward(self, model, t, p, pc_idx):
        dist, world, rank = torch.distributed, D.get_world_size(), D.get_rank()
        outs = []
        for x in (t, p, pc_idx):
            parts = [torch.empty_like(x) for _ in range(world)]
            dist.all_gather(parts, x.contiguous())
            parts[rank] = x
            outs.append(torch.cat(parts))
        return self.criterion(D.unwrap(model), *outs)


def _train_steps(ctx: D.DistContext, naive: bool = False, n_steps: int = 3, even: bool = False) -> dict:
    """Run ``n_steps`` of the real recipe (AdamW, clip, project) on the fixed global batches; works at any world size."""
    txt, txt_mask, pc, pc_mask, pc_of_link = _data()
    core = _model()
    model = D.wrap_ddp(core, ctx)
    inner = H2ARNLoss(LossConfig())
    criterion = _NaiveGatheredLoss(inner) if naive else D.GatheredLoss(inner)
    opt = torch.optim.AdamW(core.param_groups(0.01), lr=1e-3, betas=(0.91, 0.9993))
    out: dict = {"losses": [], "logs": [], "grads": []}
    for step in range(n_steps):
        glob = torch.tensor(GLOBAL_BATCHES[step % len(GLOBAL_BATCHES)])
        if even:                                   # the naive gather needs equal shards
            glob = glob[: (len(glob) // WORLD) * WORLD]
        idx = D.shard_batch(glob, ctx.rank, ctx.world_size)
        pcs = pc_of_link[idx]
        t_emb, p_emb = model(txt[idx], txt_mask[idx], pc[pcs], pc_mask[pcs])
        loss, logs = criterion(model, t_emb, p_emb, pcs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        out["grads"].append({n: p.grad.detach().clone() for n, p in core.named_parameters()})
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        core.project_parameters_()
        out["losses"].append(float(loss.detach()))
        out["logs"].append(logs)
    out["params"] = {n: p.detach().clone() for n, p in core.named_parameters()}
    return out


def _resume_runs(feats: str, out_dir: str) -> dict:
    """Through ``h2arn.train.train`` in this (already joined) process group: uninterrupted vs stopped + resumed."""
    from _fake_features import link

    from h2arn import train as T

    base = dict(d_model=16, nhead=2, num_layers=1, batch_size=10, num_epochs=3, dropout=0.1, device="cpu",
                seed=0, num_threads=1, train_link=[str(link(feats, "train"))], val_link=[str(link(feats, "val"))])
    full = T.train(T.TrainConfig(**base, run_dir=str(Path(out_dir) / "full")), quiet=True)
    T.train(T.TrainConfig(**base, run_dir=str(Path(out_dir) / "resumed")), stop_after_epoch=1, quiet=True)
    resumed = T.train(T.TrainConfig(**base, run_dir=str(Path(out_dir) / "resumed"), resume=True), quiet=True)
    assert torch.distributed.is_initialized()          # train() left the caller's process group alone
    return {"full_best": full["best"], "resumed_best": resumed["best"]}


def _worker(rank: int, world: int, port: int, out_dir: str, feats: str) -> None:
    _set_env(rank, world, port)
    torch.set_num_threads(1)
    ctx = D.setup_distributed("cpu")
    try:
        assert ctx.active and ctx.backend == "gloo" and ctx.rank == rank and D.get_world_size() == world
        x = torch.arange(3.0 * (rank + 1)).reshape(rank + 1, 3).requires_grad_(True) + rank  # 1 row / 2 rows
        x.retain_grad()
        g = D.all_gather_with_grad(x)
        weights = torch.arange(1.0, g.numel() + 1).reshape(g.shape)
        (g * weights).sum().backward()            # same loss on every rank -> d/dx = W * weights[own rows]
        result = {"gathered": g.detach(), "gather_grad": x.grad.detach(),
                  "run": _train_steps(ctx), "naive": _train_steps(ctx, naive=True, n_steps=1, even=True),
                  "resume": _resume_runs(feats, out_dir)}
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        D.cleanup_distributed(ctx)


@pytest.fixture(scope="module")
def fake_feats(tmp_path_factory):
    from _fake_features import make_fake_features

    return make_fake_features(tmp_path_factory.mktemp("feats"))


@pytest.fixture(scope="module")
def ddp_dir(tmp_path_factory, fake_feats):
    out = tmp_path_factory.mktemp("ddp")
    torch.multiprocessing.spawn(_worker, args=(WORLD, _free_port(), str(out), str(fake_feats)), nprocs=WORLD,
                                join=True)
    return out


@pytest.fixture(scope="module")
def ddp_results(ddp_dir):
    return [torch.load(ddp_dir / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.fixture(scope="module")
def single_results():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ctx = D.setup_distributed("cpu")
        assert not ctx.active
        return {"run": _train_steps(ctx), "naive": _train_steps(ctx, n_steps=1, even=True)}
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- pure helpers (no processes)

@pytest.mark.parametrize("n,world", [(7, 2), (8, 2), (5, 3), (2, 2), (9, 4)])
def test_shards_are_contiguous_cover_the_batch_in_order_and_differ_by_at_most_one(n, world):
    idx = torch.randperm(n)
    shards = [D.shard_batch(idx, r, world) for r in range(world)]
    assert torch.equal(torch.cat(shards), idx)
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_batches_too_small_for_the_world_are_refused_with_a_fix():
    D.check_batches_fit([16, 16, 3], 2)
    with pytest.raises(D.DistributedSetupError, match="batch_size"):
        D.check_batches_fit([16, 1], 2)


def test_single_process_helpers_are_no_ops():
    x = torch.randn(3, 4, requires_grad=True)
    assert D.all_gather_with_grad(x) is x and D.get_world_size() == 1 and D.is_main_process()
    assert D.broadcast_object({"a": 1}) == {"a": 1} and D.all_gather_object(5) == [5]
    D.barrier()
    ctx = D.setup_distributed("cpu")
    assert not ctx.active and D.wrap_ddp(torch.nn.Linear(2, 2), ctx).__class__ is torch.nn.Linear


def test_half_set_torchrun_environment_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for v in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(v, raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        D.setup_distributed("cpu")


def test_geometry_stays_float32_under_bf16_autocast():
    """Encoders may run in bf16, but the lift, aggregation, distances and loss must stay float32."""
    txt, txt_mask, pc, pc_mask, pcs = _data()
    model = _model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        t, p = model(txt, txt_mask, pc[pcs], pc_mask[pcs])
        loss, _ = H2ARNLoss(LossConfig())(model, t, p, pcs)
        sim = model.similarity(t, p)
    assert t.dtype == p.dtype == sim.dtype == loss.dtype == torch.float32
    c = float(model.curvature().detach())
    for e in (t, p):   # on the hyperboloid to float32 accuracy (bf16 geometry would be off by ~1e-2)
        lorentz_sq = -e[:, 0] ** 2 + (e[:, 1:] ** 2).sum(-1)
        assert torch.allclose(lorentz_sq, torch.full_like(lorentz_sq, -1.0 / c), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- 2 gloo processes vs 1 process

def test_all_gather_with_grad_concatenates_uneven_shards_and_sums_gradients(ddp_results):
    expected = torch.cat([torch.arange(3.0).reshape(1, 3), torch.arange(6.0).reshape(2, 3) + 1])
    weights = torch.arange(1.0, 10.0).reshape(3, 3)
    for rank, res in enumerate(ddp_results):
        assert torch.equal(res["gathered"], expected)
        rows = slice(0, 1) if rank == 0 else slice(1, 3)
        assert torch.equal(res["gather_grad"], WORLD * weights[rows])


def test_ddp_loss_and_logged_terms_equal_single_process_on_the_global_batch(ddp_results, single_results):
    ref = single_results["run"]
    for res in ddp_results:
        assert res["run"]["losses"] == pytest.approx(ref["losses"], rel=1e-5, abs=1e-6)
        for logs, ref_logs in zip(res["run"]["logs"], ref["logs"]):
            for key in ("contrastive", "contrastive_t2p", "contrastive_p2t", "entailment", "entail_active_frac"):
                assert logs[key] == pytest.approx(ref_logs[key], rel=1e-5, abs=1e-6), key


def test_ddp_gradients_of_every_parameter_equal_single_process(ddp_results, single_results):
    ref = single_results["run"]["grads"]
    for res in ddp_results:
        for step, (grads, ref_grads) in enumerate(zip(res["run"]["grads"], ref)):
            assert grads.keys() == ref_grads.keys()
            for name, g in grads.items():
                torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-5,
                                           msg=lambda m, n=name, s=step: f"step {s} grad {n}: {m}")


def test_ddp_parameters_after_optimiser_steps_equal_single_process_and_across_ranks(ddp_results, single_results):
    """Exception: attention KEY biases. Softmax is shift-invariant, so their true gradient is exactly 0 and
    both runs see only float noise (~1e-9, checked below), which Adam divides by its own square root: the
    resulting steps are noise of size up to lr in either run. Those 2*d_model entries are compared only up
    to that bound; every other entry to 1e-5."""
    ref = single_results["run"]["params"]
    lr, n_steps = 1e-3, len(single_results["run"]["losses"])
    for res in ddp_results:
        for name, p in res["run"]["params"].items():
            q = ref[name]
            if name.endswith("self_attn.in_proj_bias"):
                d = p.shape[0] // 3
                for grads in (res["run"]["grads"], single_results["run"]["grads"]):
                    assert all(float(g[name][d:2 * d].abs().max()) < 1e-6 for g in grads)
                assert float((p[d:2 * d] - q[d:2 * d]).abs().max()) <= 2 * lr * n_steps
                p, q = torch.cat([p[:d], p[2 * d:]]), torch.cat([q[:d], q[2 * d:]])
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    for name, p in ddp_results[0]["run"]["params"].items():
        assert torch.equal(p, ddp_results[1]["run"]["params"][name]), name   # DDP keeps replicas identical


def test_plain_all_gather_gets_the_gradients_wrong(ddp_results, single_results):
    """Negative control: the test above can fail; the usual plain-all_gather pattern under-counts gradients."""
    ref = single_results["naive"]["grads"][0]
    naive = ddp_results[0]["naive"]["grads"][0]
    assert ddp_results[0]["naive"]["losses"][0] == pytest.approx(single_results["naive"]["losses"][0], rel=1e-5)
    worst = max(float((naive[n] - ref[n]).abs().max() / (ref[n].abs().max() + 1e-12)) for n in ref)
    assert worst > 0.1


# --------------------------------------------------------------------------- end to end through h2arn.train

TIMINGS = {"epoch_s", "wall_s", "pairs_per_s"}


def _comparable(metrics: dict) -> dict:
    """metrics.json without what legitimately differs between runs (timings, run folder, thread count)."""
    def scrub(x):
        if isinstance(x, dict):
            return {k: scrub(v) for k, v in x.items() if k not in TIMINGS}
        if isinstance(x, list):
            return [scrub(v) for v in x]
        return x

    out = scrub(metrics)
    for key in ("run_dir", "save_model_path", "checkpoint_path", "resume"):
        out["config"].pop(key, None)
    out.pop("distributed", None)
    return out


def _assert_close_json(a, b, path="metrics"):
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            _assert_close_json(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close_json(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, (int, float)):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-5), f"{path}: {a} vs {b}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


def _e2e_args(feats: Path, run_dir: Path) -> list[str]:
    from _fake_features import link

    # 48 train links, global batch 10 -> batches of 10,10,10,10,8: shards 5/5 and 4/4
    return ["--train_link", str(link(feats, "train")), "--val_link", str(link(feats, "val")),
            "--d_model", "16", "--nhead", "2", "--num_layers", "1", "--batch_size", "10", "--num_epochs", "3",
            "--dropout", "0", "--device", "cpu", "--seed", "0", "--num_threads", "1", "--run_dir", str(run_dir),
            "--quiet"]


def test_torchrun_two_processes_write_the_single_process_metrics(fake_feats, tmp_path):
    """The real entry: ``python -m torch.distributed.run --nproc_per_node=2 -m h2arn.train`` on gloo."""
    import json
    import subprocess

    from h2arn import train as T

    single_dir, ddp_dir = tmp_path / "single", tmp_path / "ddp"
    assert T.main(_e2e_args(fake_feats, single_dir)) == 0
    env = {k: v for k, v in os.environ.items() if k not in D.ENV_VARS}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1]) + os.pathsep + env.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "h2arn.train", *_e2e_args(fake_feats, ddp_dir)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    printed = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1                                    # only rank 0 prints the result line
    single = json.loads((single_dir / "metrics.json").read_text())
    ddp = json.loads((ddp_dir / "metrics.json").read_text())
    assert ddp["distributed"] == {"world_size": 2, "backend": "gloo"} and "distributed" not in single
    assert ddp["complete"] and [e["epoch"] for e in ddp["epochs"]] == [1, 2, 3]
    _assert_close_json(_comparable(single), _comparable(ddp))
    assert ddp["best"]["epoch"] == single["best"]["epoch"]
    assert sorted(p.name for p in ddp_dir.iterdir()) == sorted(p.name for p in single_dir.iterdir())
    ck = torch.load(ddp_dir / "checkpoint.pth", weights_only=True)
    assert not any(k.startswith("module.") for k in ck["state_dict"])   # plain model keys, loadable anywhere
    assert len(ck["rng_ranks"]) == 2


def test_distributed_resume_continues_exactly_and_only_rank_0_writes(ddp_dir, ddp_results):
    """dropout 0.1: per-rank RNG streams are checkpointed (rng_ranks), so stop + resume == uninterrupted."""
    import json

    full = json.loads((ddp_dir / "full" / "metrics.json").read_text())
    resumed = json.loads((ddp_dir / "resumed" / "metrics.json").read_text())
    _assert_close_json(_comparable(full), _comparable(resumed))
    assert full["complete"] and resumed["complete"] and full["distributed"]["world_size"] == WORLD
    for res in ddp_results:   # every rank returns rank 0's validation results
        assert res["resume"]["full_best"] == ddp_results[0]["resume"]["full_best"]
        assert res["resume"]["full_best"]["epoch"] == full["best"]["epoch"]
    assert sorted(p.name for p in (ddp_dir / "full").iterdir()) == ["best_model.pth", "checkpoint.pth",
                                                                    "metrics.json"]
