"""Training throughput: our training step vs a straightforward re-implementation of the official one.

Prints, for the ``ci`` configuration on the CPU (``h2arn.course.experiments.TRAIN_PROFILES["ci"]`` sizes) and (when a GPU is present) for the paper's
configuration (batch 256, d_model 512, 6 layers, 64 heads, 77 text x 100 cloud tokens of width 512):

* training pairs/s of :func:`h2arn.train.training_step` (float32, and bf16 AMP on CUDA);
* the step time of an *official-style* step on the same device and shapes, and the ratio.

The official-style step follows ``liwrui/H2ARN`` ``model.py``/``train.py`` as described in the
research dossier (sections 1-3): no padding masks, the direct lift with the time coordinate last,
``acosh`` distances to the anchor, inner-product logits, the entailment angle computed for the
full B x B matrix and then masked, AdamW + linear schedule + clipping, and after every batch
``torch.cuda.empty_cache()`` and ``gc.collect()`` when on CUDA. It is written out here on purpose
(a baseline to compare against, not library code); the library's geometry lives in ``h2arn.lorentz``.

Run: ``python benchmarks/bench_train.py [--steps N] [--device cpu|cuda]``.
"""
from __future__ import annotations

import argparse
import gc
import math
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import machine_info, timeit  # noqa: E402

from h2arn.device import resolve_device  # noqa: E402
from h2arn.course.experiments import TRAIN_PROFILES  # noqa: E402
from h2arn.losses import H2ARNLoss  # noqa: E402
from h2arn.model import H2ARN, LossConfig, ModelConfig  # noqa: E402
from h2arn.features import trim_padding  # noqa: E402
from h2arn.train import WarmupLinearDecay, training_step  # noqa: E402

CONFIGS = {
    # the ci training profile (h2arn.course.experiments.TRAIN_PROFILES["ci"]) on the ci features' shapes
    # (MiniLM 77 x 384 text tokens, about 20 of them valid; PointNet 100 x 512 cloud tokens)
    "ci": dict(batch=TRAIN_PROFILES["ci"]["batch_size"], d_txt=384, d_pcd=512, l_txt=77, l_pcd=100,
               d_model=TRAIN_PROFILES["ci"]["d_model"], nhead=TRAIN_PROFILES["ci"]["nhead"],
               layers=TRAIN_PROFILES["ci"]["num_layers"]),
    # the paper's configuration on the official feature shapes (CLIP 77 x 512, DGCNN 100 x 512)
    "paper": dict(batch=256, d_txt=512, d_pcd=512, l_txt=77, l_pcd=100, d_model=512, nhead=64, layers=6),
}


def measure(step, device: torch.device, steps: int, warmup: int = 2) -> float:
    """Median seconds per call of ``step()`` after ``warmup`` calls (CUDA synchronised), via ``_util.timeit``."""
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    return timeit(step, repeats=steps, warmup=warmup, sync=sync)


def make_batch(cfg: dict, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    b = cfg["batch"]
    txt = torch.randn(b, cfg["l_txt"], cfg["d_txt"], generator=g)
    pc = torch.randn(b, cfg["l_pcd"], cfg["d_pcd"], generator=g)
    txt_mask = torch.ones(b, cfg["l_txt"], dtype=torch.bool)
    txt_mask[:, 20:] = False                          # captions use ~20 of the 77 positions
    pc_mask = torch.ones(b, cfg["l_pcd"], dtype=torch.bool)
    pc_idx = torch.arange(b) // 4                     # 4 captions per cloud: multi-positive batches
    return [x.to(device) for x in (txt, txt_mask, pc, pc_mask, pc_idx)]


# --------------------------------------------------------------------------- ours

def our_step_fn(cfg: dict, device: torch.device, amp: bool):
    model = H2ARN(ModelConfig(d_txt=cfg["d_txt"], d_pcd=cfg["d_pcd"], d_model=cfg["d_model"], nhead=cfg["nhead"],
                              num_layers=cfg["layers"])).to(device)
    crit = H2ARNLoss(LossConfig())
    opt = torch.optim.AdamW(model.param_groups(0.01), lr=2e-3, betas=(0.91, 0.9993), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupLinearDecay(10_000, 1_000))
    txt, txt_mask, pc, pc_mask, pc_idx = make_batch(cfg, device)

    def step():   # as the training loop: drop all-padding token columns, then one optimisation step
        t, tm = trim_padding(txt, txt_mask)
        training_step(model, crit, opt, sched, t, tm, pc, pc_mask, pc_idx, amp=amp)
    return step


# --------------------------------------------------------------------------- official-style baseline

class _OfficialTower(nn.Module):
    def __init__(self, d_in, d_model, nhead, layers):
        super().__init__()
        self.proj = nn.Linear(d_in, d_model) if d_in != d_model else nn.Identity()
        self.layers = nn.ModuleList([nn.TransformerEncoderLayer(d_model, nhead, 4 * d_model, 0.1, batch_first=True,
                                                                norm_first=True) for _ in range(layers)])

    def forward(self, x):
        x = self.proj(x)
        for layer in self.layers:
            x = layer(x)                    # no padding mask, as the official code
        return x


def _off_lift(v, c):                        # direct lift, time LAST (official)
    return torch.cat([v, torch.sqrt(1.0 / c + (v * v).sum(-1, keepdim=True))], dim=-1)


def _off_inner(u, v):
    return (u[..., :-1] * v[..., :-1]).sum(-1) - u[..., -1] * v[..., -1]


class _OfficialAgg(nn.Module):
    def __init__(self):
        super().__init__()
        self.T = nn.Parameter(torch.tensor(0.07))

    def forward(self, z, c):
        anchor = z.mean(1, keepdim=True)
        h, ha = _off_lift(z, c), _off_lift(anchor, c)
        d = torch.acosh(torch.clamp(-c * _off_inner(h, ha), min=1 + 1e-7)) / torch.sqrt(c)
        w = torch.softmax(-d / self.T, dim=1)
        return _off_lift((w.unsqueeze(-1) * z).sum(1), c)


class OfficialStyle(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.txt = _OfficialTower(cfg["d_txt"], cfg["d_model"], cfg["nhead"], cfg["layers"])
        self.pcd = _OfficialTower(cfg["d_pcd"], cfg["d_model"], cfg["nhead"], cfg["layers"])
        self.log_c = nn.Parameter(torch.zeros(()))
        a0 = math.log(1 / math.sqrt(cfg["d_model"]))
        self.log_a_t, self.log_a_p = nn.Parameter(torch.tensor(a0)), nn.Parameter(torch.tensor(a0))
        self.agg_t, self.agg_p = _OfficialAgg(), _OfficialAgg()

    def forward(self, txt, pc, pc_idx, tau=0.07, lam=0.2, K=0.1):
        c = self.log_c.exp().clamp(0.1, 10.0)
        ht = self.agg_t(self.txt(txt) * self.log_a_t.exp(), c)
        hp = self.agg_p(self.pcd(pc) * self.log_a_p.exp(), c)
        pos = (pc_idx[:, None] == pc_idx[None, :]).float()
        inner = ht[:, :-1] @ hp[:, :-1].T - ht[:, -1:] * hp[:, -1:].T          # (B, B)
        logits = inner / tau

        def mp_nce(lg, pm):
            return (torch.logsumexp(lg, 1) - torch.logsumexp(lg.masked_fill(pm == 0, -1e9), 1)).mean()
        cont = 0.5 * (mp_nce(logits, pos) + mp_nce(logits.T, pos.T))
        # MERU entailment on the full B x B matrix (text = apex), then masked with pos
        xn = ht[:, :-1].norm(dim=-1).clamp(min=1e-8)
        phi = torch.asin(torch.clamp(2 * K / (torch.sqrt(c) * xn), -1 + 1e-7, 1 - 1e-7))
        cxy = c * inner
        num = hp[None, :, -1] + ht[:, -1:] * cxy
        den = (xn[:, None] * torch.sqrt(torch.clamp(cxy ** 2 - 1, min=1e-8))).clamp(min=1e-8)
        theta = torch.acos(torch.clamp(num / den, -1 + 1e-7, 1 - 1e-7))
        ordl = (pos * torch.relu(theta - phi[:, None])).sum() / pos.sum().clamp(min=1)
        return cont + lam * ordl


def official_step_fn(cfg: dict, device: torch.device):
    model = OfficialStyle(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.91, 0.9993), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupLinearDecay(10_000, 1_000))
    b = cfg["batch"]
    g = torch.Generator().manual_seed(0)
    txt = torch.randn(b, cfg["l_txt"], cfg["d_txt"], generator=g).to(device)
    pc = torch.randn(b, cfg["l_pcd"], cfg["d_pcd"], generator=g).to(device)
    pc_idx = (torch.arange(b) // 4).to(device)

    def step():
        loss = model(txt, pc, pc_idx)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if device.type == "cuda":                    # the official loop does this after every batch
            torch.cuda.empty_cache()
            gc.collect()
    return step


# --------------------------------------------------------------------------- main

def run(name: str, device: torch.device, steps: int) -> None:
    cfg = CONFIGS[name]
    b = cfg["batch"]
    print(f"\n== {name} config on {device}: batch {b}, d_model {cfg['d_model']}, {cfg['layers']} layers, "
          f"{cfg['nhead']} heads, text {cfg['l_txt']}x{cfg['d_txt']}, cloud {cfg['l_pcd']}x{cfg['d_pcd']}")
    ours = measure(our_step_fn(cfg, device, amp=False), device, steps)
    print(f"ours fp32           : {ours * 1e3:9.1f} ms/step  {b / ours:9.1f} pairs/s")
    if device.type == "cuda":
        ours_amp = measure(our_step_fn(cfg, device, amp=True), device, steps)
        print(f"ours bf16 AMP       : {ours_amp * 1e3:9.1f} ms/step  {b / ours_amp:9.1f} pairs/s  "
              f"(AMP speed-up x{ours / ours_amp:.2f})")
    off = measure(official_step_fn(cfg, device), device, steps)
    print(f"official-style fp32 : {off * 1e3:9.1f} ms/step  {b / off:9.1f} pairs/s")
    print(f"ratio official / ours (fp32): x{off / ours:.2f}  (>1 = ours faster; ours masks padding and skips "
          f"all-padding columns, uses chord distances and gathers only the positive cone pairs)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per measurement (median reported)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--configs", nargs="+", default=None, help="ci and/or paper (default: ci on CPU, +paper on GPU)")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    print(machine_info())
    print(f"device {device}; median of {args.steps} steps after 2 warm-up steps")
    names = args.configs or (["ci", "paper"] if device.type == "cuda" else ["ci"])
    for name in names:
        run(name, device, args.steps)
    if device.type != "cuda" and "paper" not in names:
        print("\n(no GPU: the paper configuration is only timed on CUDA; pass --configs ci paper to force it on CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
