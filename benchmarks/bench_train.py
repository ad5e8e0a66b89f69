"""Training throughput: our training step vs a straightforward re-implementation of the official one.

Prints, for the ``ci`` configuration (``h2arn.course.experiments.TRAIN_PROFILES["ci"]`` sizes) and, with
``--configs paper``, for the paper's widths (d_model 512, 6 layers, 64 heads, 77 text x 100 cloud tokens of
width 512; batch 256 on CUDA, ``--paper-batch`` on the CPU, default 32: the per-pair cost does not depend on
the batch size, and batch 256 needs about 20 GB of activations for the official step):

* the step time of :func:`h2arn.train.training_step` (ours) and of an *official-style* step on the same
  device and shapes, and the ratio official / ours;
* the levers measured one by one (``ours`` rows): the previous ``nn.TransformerEncoderLayer`` path with the
  padding mask (before the SDPA layer of :mod:`h2arn.attention`), bf16 autocast on the CPU, attention-weight
  dropout off (lets SDPA use the fused flash kernel; changes the model, so information only), and with
  ``--compile`` ``torch.compile`` of the model.

Every variant runs in turns (A B C A B C ...; ``_util.interleaved``) so load from other processes hits all of
them alike; medians of wall time and of process CPU time are printed, and the ratios use the CPU time on
the CPU (steadier on a shared machine) and the wall time on CUDA.

The official-style step follows ``liwrui/H2ARN`` ``model.py``/``train.py`` as described in the
research dossier (sections 1-3): no padding masks, the direct lift with the time coordinate last,
``acosh`` distances to the anchor, inner-product logits, the entailment angle computed for the
full B x B matrix and then masked, AdamW + linear schedule + clipping, and after every batch
``torch.cuda.empty_cache()`` and ``gc.collect()`` when on CUDA. It is written out here on purpose
(a baseline to compare against, not library code); the library's geometry lives in ``h2arn.lorentz``.

Run: ``python benchmarks/bench_train.py [--steps N] [--device cpu|cuda] [--configs ci paper] [--json FILE]``.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import sys
import time
import types
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import interleaved, load_info, machine_info, print_table  # noqa: E402

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

def _module_path_forward(self, tokens, mask):
    """``ModalityEncoder.forward`` before :mod:`h2arn.attention`: every layer through ``nn.TransformerEncoderLayer``
    with ``src_key_padding_mask``, padded inputs always zeroed. Kept here only to measure that lever."""
    x = torch.where(mask.unsqueeze(-1), tokens, torch.zeros((), dtype=tokens.dtype, device=tokens.device))
    x = self.input_proj(x)
    for layer in self.layers:
        x = layer(x, src_key_padding_mask=~mask)
    return x


OUR_VARIANTS = {
    "ours": "h2arn.train.training_step (SDPA layer, padding trimmed per batch)",
    "ours, nn.TransformerEncoderLayer path": "the previous layer path (MHA with the padding mask)",
    "ours, bf16 autocast (CPU)": "encoders under torch.autocast('cpu', bfloat16)",
    "ours, attention dropout 0 (model change)": "fused SDPA flash kernel; information only",
    "ours, torch.compile": "torch.compile(model) (first call compiles; --compile)",
}


def our_step_fn(cfg: dict, device: torch.device, amp: bool, variant: str = "ours"):
    model = H2ARN(ModelConfig(d_txt=cfg["d_txt"], d_pcd=cfg["d_pcd"], d_model=cfg["d_model"], nhead=cfg["nhead"],
                              num_layers=cfg["layers"])).to(device)
    crit = H2ARNLoss(LossConfig())
    opt = torch.optim.AdamW(model.param_groups(0.01), lr=2e-3, betas=(0.91, 0.9993), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupLinearDecay(10_000, 1_000))
    txt, txt_mask, pc, pc_mask, pc_idx = make_batch(cfg, device)
    runner, context = model, contextlib.nullcontext
    if variant == "ours, nn.TransformerEncoderLayer path":
        for enc in (model.txt_encoder, model.pcd_encoder):
            enc.forward = types.MethodType(_module_path_forward, enc)
    elif variant == "ours, bf16 autocast (CPU)":
        context = lambda: torch.autocast("cpu", dtype=torch.bfloat16)   # noqa: E731
    elif variant == "ours, attention dropout 0 (model change)":
        for enc in (model.txt_encoder, model.pcd_encoder):
            for layer in enc.layers:
                layer.self_attn.dropout = 0.0
    elif variant == "ours, torch.compile":
        runner = torch.compile(model, dynamic=True)
        runner.project_parameters_ = model.project_parameters_   # training_step calls it on the model

    def step():   # as the training loop: drop all-padding token columns, then one optimisation step
        t, tm = trim_padding(txt, txt_mask)
        with context():
            training_step(runner, crit, opt, sched, t, tm, pc, pc_mask, pc_idx, amp=amp)
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

def run(name: str, device: torch.device, steps: int, paper_batch: int, compile_: bool,
        all_variants: bool = False) -> list[dict]:
    cfg = dict(CONFIGS[name])
    if name == "paper" and device.type != "cuda":
        cfg["batch"] = paper_batch
    b = cfg["batch"]
    print(f"\n== {name} config on {device}: batch {b}, d_model {cfg['d_model']}, {cfg['layers']} layers, "
          f"{cfg['nhead']} heads, text {cfg['l_txt']}x{cfg['d_txt']} (20 valid), cloud {cfg['l_pcd']}x{cfg['d_pcd']}",
          flush=True)
    fns = {"official-style": official_step_fn(cfg, device)}
    names = ["ours"]
    if name == "ci" or device.type == "cuda" or all_variants:   # the paper widths are slow on a CPU: two rows
        names.append("ours, nn.TransformerEncoderLayer path")
        if device.type == "cuda":
            fns["ours, bf16 AMP (CUDA)"] = our_step_fn(cfg, device, amp=True)
        else:
            names.append("ours, bf16 autocast (CPU)")
        names.append("ours, attention dropout 0 (model change)")
    if compile_:
        names.append("ours, torch.compile")
    for variant in names:
        fns[variant] = our_step_fn(cfg, device, amp=False, variant=variant)
    start = time.perf_counter()
    times = interleaved(fns, repeats=steps, warmup=1 if name == "paper" else 2,
                        sync=torch.cuda.synchronize if device.type == "cuda" else None)
    key = "wall_s" if device.type == "cuda" else "cpu_s"
    base = times["official-style"][key]
    rows = [{"config": name, "device": device.type, "batch": b, "step": variant,
             "wall ms": 1e3 * t["wall_s"], "cpu ms": 1e3 * t["cpu_s"], "pairs/s (wall)": b / t["wall_s"],
             "official / this": base / t[key]} for variant, t in times.items()]
    print_table(rows, ["step", "wall ms", "cpu ms", "pairs/s (wall)", "official / this"])
    target = 3.0 if name == "ci" else 1.5
    ratio = base / times["ours"][key]
    verdict = "PASS" if ratio >= target else f"MISS (short by x{target / ratio:.2f})"
    print(f"ratio official / ours ({key.split('_')[0]} time): x{ratio:.2f}; target >= x{target:g}: {verdict}  "
          f"[{time.perf_counter() - start:.0f} s for this config]", flush=True)
    for r in rows:
        r.update({"target": target, "ratio_key": key})
    return rows


def profile_steps(name: str, device: torch.device, steps: int = 3, rows: int = 12) -> None:
    """Where the time goes: ``torch.profiler`` tables (self CPU time per op) of our step and of the official-style one."""
    from torch.profiler import ProfilerActivity, profile

    cfg = CONFIGS[name]
    for label, fn in (("ours", our_step_fn(cfg, device, amp=False)), ("official-style", official_step_fn(cfg, device))):
        fn()
        fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                fn()
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        print(f"\n-- torch.profiler, {label}, {name} config, {steps} steps: self CPU time per op "
              f"({total / 1e3 / steps:.1f} ms per step under the profiler)")
        print_table([{"op": e.key, "calls/step": e.count / steps, "ms/step": e.self_cpu_time_total / 1e3 / steps,
                      "share": f"{100 * e.self_cpu_time_total / total:.1f}%"} for e in events[:rows]])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant (median reported)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--configs", nargs="+", default=None, choices=sorted(CONFIGS),
                    help="ci and/or paper (default: ci on CPU, ci + paper on GPU)")
    ap.add_argument("--paper-batch", type=int, default=32, help="batch of the paper config on the CPU (CUDA: 256)")
    ap.add_argument("--paper-steps", type=int, default=2, help="timed steps per variant at the paper config")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the shared 2-core machine)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile(model) (slow to compile on CPU)")
    ap.add_argument("--all-variants", action="store_true", help="every lever also at the paper widths on the CPU")
    ap.add_argument("--json", default=None, help="also write the rows as JSON to this file (benchmarks/run_all.py)")
    ap.add_argument("--profile", action="store_true", help="also print torch.profiler tables of both steps (ci)")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    info = {"machine": machine_info(), "load_before": load_info(), "steps": args.steps}
    print(info["machine"])
    print(f"device {device}; {info['load_before']}; median of {args.steps} (ci) / {args.paper_steps} (paper) "
          "interleaved steps per variant")
    names = args.configs or (["ci", "paper"] if device.type == "cuda" else ["ci"])
    rows = []
    for name in names:
        rows += run(name, device, args.steps if name == "ci" else args.paper_steps, args.paper_batch, args.compile,
                    args.all_variants)
    if args.profile:
        profile_steps("ci", device)
    info["load_after"] = load_info()
    print(f"done: {info['load_after']}")
    if device.type != "cuda" and "paper" not in names:
        print("\n(the paper configuration is slow on a CPU: pass --configs ci paper to time it)")
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "rows": rows}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
