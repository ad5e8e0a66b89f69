"""Small learnable fake feature sets for the training/inference tests (written with h2arn.features.write_split)."""
from __future__ import annotations

from pathlib import Path

import torch

from h2arn.features import write_split

D_TXT, D_PCD, L_TXT, L_PCD = 12, 10, 6, 5


def make_fake_features(root: Path, *, n_clouds: dict | None = None, caps_per_cloud: int = 2, seed: int = 0,
                       subset: str = "Elephant") -> Path:
    """Write train/val/test splits under ``root``; captions are noisy linear images of their cloud's tokens,
    so a model can learn the pairing. Returns ``root``."""
    n_clouds = n_clouds or {"train": 24, "val": 10, "test": 10}
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(D_PCD, D_TXT, generator=g) / D_PCD ** 0.5
    for split, n in n_clouds.items():
        pc = torch.randn(n, L_PCD, D_PCD, generator=g)
        pc_mask = torch.ones(n, L_PCD, dtype=torch.bool)
        pc_mask[::3, -1] = False                      # some padded clouds
        links, txt_rows, meta = [], [], []
        for j in range(n):
            for k in range(caps_per_cloud):
                base = pc[j].mean(0) @ proj                                   # (D_TXT,)
                toks = base + 0.3 * torch.randn(L_TXT, D_TXT, generator=g)
                txt_rows.append(toks)
                links.append((len(txt_rows) - 1, j))
                meta.append({"caption": f"cloud {j} caption {k}", "shape": f"obj{j}", "level": k % 4,
                             "category": f"cat{j % 3}"})
        txt = torch.stack(txt_rows)
        txt_mask = torch.ones(txt.shape[:2], dtype=torch.bool)
        txt_mask[::2, -2:] = False
        write_split(root, subset, split, txt=txt, txt_mask=txt_mask, pc=pc, pc_mask=pc_mask, links=links,
                    txt_model="FAKE", pc_model="FAKEPC", meta=meta)
    return root


def link(root: Path, split: str, subset: str = "Elephant") -> Path:
    return Path(root) / f"{subset}_link_{split}.json"
