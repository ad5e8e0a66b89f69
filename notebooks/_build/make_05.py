"""Write notebooks/05_model_and_losses.ipynb (clean, no outputs). Run: python notebooks/_build/make_05.py"""
from nbtools import code, md, params, write

cells = [
    md("""
# 05 · The H2ARN model and its losses, piece by piece

Step 2 of the paper: from frozen token features to one hyperbolic embedding per caption and per point cloud,
and the two losses that train it. We build each piece on its own, look at it, and only then assemble
`h2arn.model.H2ARN` and `h2arn.losses.H2ARNLoss`.

```
tokens (B, L, D) ─► Linear? ─► 6 × Pre-LN Transformer ─► × α ─► lift to the hyperboloid (curvature c)
                                                              └► contribution-aware aggregation ─► (B, D+1)
text emb, cloud emb ─► −d_L/τ logits ─► multi-positive InfoNCE  +  0.2 × entailment-cone loss (text = apex)
```

Where this implementation departs from the official code (`liwrui/H2ARN`, `model.py`), and why:

| Official code | Here | Why |
|---|---|---|
| no attention / pooling mask: the 60+ padding tokens of a short CLIP caption take part | padding masked in attention, anchor mean and aggregation | a short caption's anchor would be mostly padding |
| direct lift `(x, sqrt(1/c+‖x‖²))` | paper's exp map (Eq. 5) by default, `lift="official"` available | follow the paper; keep the code's variant for comparison |
| aggregation temperature `T` is a raw parameter | `T = exp(log T)`, bounded | a negative `T` silently inverts the softmax |
| `acosh(max(−c⟨x,y⟩, 1+1e-7))` | chord-form distance (`lorentz.dist`) | finite gradient when a token equals the anchor |
| logits `⟨h_t,h_p⟩_L/τ` | `−d_L/τ` as the paper, `logits="inner"` available | same ranking, different training signal |
| clamps `c` inside `forward` | accessors with a straight-through clamp | `encode_*` alone sees the same `c`; no zero gradient at a bound |
"""),
    params("""
profile = "ci"        # "ci": CPU, small; "full": larger toy model and more steps
device = "auto"
seed = 0
subset = "Elephant"   # which half of the generated benchmark to take a point cloud from
"""),
    code("""
cfg = {
    "ci":   dict(n_tokens=48, cone_steps=150, toy_pairs=12, toy_steps=30, d_model=32, layers=2),
    "full": dict(n_tokens=100, cone_steps=400, toy_pairs=24, toy_steps=200, d_model=64, layers=2),
}[profile]
# one shape is all section 2 needs: the small benchmark (built in seconds) serves both profiles
cfg["data_profile"] = "ci"
cfg
"""),
    code("""
import math
import numpy as np
import torch
import matplotlib.pyplot as plt

from h2arn import lorentz as L
from h2arn.aggregation import aggregate, lift_tokens
from h2arn.device import resolve_device, seed_everything
from h2arn.losses import H2ARNLoss, entailment_cone_loss, positive_mask
from h2arn.model import H2ARN, LossConfig, ModelConfig
from h2arn.paths import save_figure

dev = resolve_device(device)
seed_everything(seed)
print("device:", dev)
"""),
    md("""
## 1 · Lifting Euclidean tokens onto the hyperboloid

A token `z ∈ R^D` becomes a point `h ∈ R^{D+1}` with `⟨h,h⟩_L = −1/c` (time coordinate first, see chapter 01).
Two maps are in use:

* **exp map at the origin** (paper, Eq. 5): `h_s = sinh(√c‖z‖)/(√c‖z‖)·z`. The hyperbolic distance to the
  origin equals `‖z‖`: the map is an isometry along rays.
* **direct lift** (official code): `h_s = z`. The distance to the origin is only `asinh(√c‖z‖)/√c`.

Both put every token exactly on the manifold; they differ in how far out a token of a given norm lands. The
learnable scale α (init `1/√512`) keeps token norms around 1 at the start, where the two are close.
"""),
    code("""
c = 1.0
r = torch.linspace(0, 4, 200, dtype=torch.float64)
v = torch.stack([r, torch.zeros_like(r)], dim=-1)
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for lift in ("expmap", "official"):
    h = lift_tokens(v, c, lift)
    axes[0].plot(r, L.dist0(h, c), label=lift)
    print(f"{lift:9s} max |c<h,h>_L + 1| = {(c * L.inner(h, h) + 1).abs().max():.1e}")
axes[0].set(xlabel="Euclidean norm ‖z‖", ylabel="hyperbolic distance to origin", title="how far a token lands")
axes[0].legend()
# a polar grid of 2-D tokens, drawn in the Poincaré disk after each lift
ang = torch.linspace(0, 2 * math.pi, 13, dtype=torch.float64)[:-1]
for k, rad in enumerate((0.5, 1.0, 2.0, 3.0)):
    z = rad * torch.stack([ang.cos(), ang.sin()], dim=-1)
    for lift, marker in (("expmap", "o"), ("official", "x")):
        p = L.to_poincare(lift_tokens(z, c, lift), c)
        axes[1].scatter(p[:, 0], p[:, 1], marker=marker, s=22, color=f"C{k}",
                        label=f"{lift}, ‖z‖={rad}")
axes[1].add_patch(plt.Circle((0, 0), 1 / math.sqrt(c), fill=False, color="k"))
axes[1].set_aspect("equal"); axes[1].set_title("tokens of norm 0.5, 1, 2, 3 in the Poincaré disk")
axes[1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
save_figure(fig, "05_lifts")
plt.show()
"""),
    md("""
## 2 · Contribution weights on a point cloud

For one sample with scaled tokens `z_1..z_L` (valid ones only):

1. anchor `z̄` = masked mean; 2. lift tokens and anchor; 3. `w_i = softmax_i(−d_L(h_i, h̄)/T)`;
4. `z* = Σ w_i z_i` (a Euclidean weighted sum); 5. embedding = lift(`z*`).

We take one generated artefact (chapter 02), which carries a per-point *redundancy flag* (duplicated points,
supports, clutter added on purpose). We cut it into local tokens: farthest-point-sampled centres, each point
assigned to its nearest centre. **The token features here are a stand-in, not DGCNN features**: a fixed random
feature map of each point's (xyz, rgb), max-pooled per token, like the DGCNN pooling. Chapter 04 extracts the
real features; the point of this cell is only to see what the weighting does.
"""),
    code("""
from h2arn.data import ensure_synthetic, load_split
from h2arn.encoders.tokens import farthest_point_sample

root = ensure_synthetic(cfg["data_profile"])
records = load_split(root, subset, "train", limit=12)
# the record with the most redundant points (extra column 1 = redundant_flag in the generated data)
def n_redundant(rec):
    return 0 if rec.extra is None or rec.extra.shape[1] < 2 else int(rec.extra[:, 1].sum())
rec = max(records, key=n_redundant)
pts = torch.from_numpy(rec.points).float()                      # (N, 6) xyz rgb
flag = torch.from_numpy(rec.extra[:, 1]).bool() if n_redundant(rec) else torch.zeros(len(pts), dtype=torch.bool)
print(rec.name, "|", rec.captions[0][:90], "|", len(pts), "points,", int(flag.sum()), "flagged redundant")

centres = farthest_point_sample(pts[None, :, :3], cfg["n_tokens"])[0]
assign = torch.cdist(pts[:, :3], pts[centres, :3]).argmin(dim=1)       # (N,) token id of each point
gen = torch.Generator().manual_seed(seed)
proj = torch.randn(6, 64, generator=gen)
point_feat = torch.relu(pts @ proj)                                      # (N, 64) stand-in per-point features
tok = torch.full((cfg["n_tokens"], 64), float("-inf")).scatter_reduce(
    0, assign[:, None].expand(-1, 64), point_feat, reduce="amax")        # max-pool per token
tok = torch.nan_to_num(tok, neginf=0.0)
tok_mask = torch.bincount(assign, minlength=cfg["n_tokens"]) > 0
z = (tok / tok[tok_mask].norm(dim=-1).mean())[None]                     # scale: mean token norm 1 (the role of α)
emb, w = aggregate(z, tok_mask[None], c=1.0, temperature=0.07)
w = w[0]
redundant_share = torch.zeros(cfg["n_tokens"]).index_add_(0, assign, flag.float()) / torch.bincount(assign, minlength=cfg["n_tokens"]).clamp_min(1)
print("on the manifold:", float((L.inner(emb, emb) + 1).abs().max()))
print(f"mean weight of tokens made mostly of redundant points: {w[redundant_share > 0.5].mean():.4f}  "
      f"vs the others: {w[(redundant_share <= 0.5) & tok_mask].mean():.4f}  (uniform = {1 / int(tok_mask.sum()):.4f})")
"""),
    code("""
from h2arn.data import plot_cloud
fig = plt.figure(figsize=(13, 5))
ax = fig.add_subplot(1, 3, 1, projection="3d"); plot_cloud(ax, rec.points, title="colours", size=5)
ax = fig.add_subplot(1, 3, 2, projection="3d")
plot_cloud(ax, rec.points, colors=flag.float().numpy(), title="redundant points (yellow)", size=5)
ax = fig.add_subplot(1, 3, 3, projection="3d")
plot_cloud(ax, rec.points, colors=(w[assign] * tok_mask.sum()).numpy(), title="token weight × #tokens (1 = uniform)", size=5)
fig.colorbar(ax.collections[0], ax=ax, fraction=0.03)
save_figure(fig, "05_contribution_weights")
plt.show()
"""),
    md("""
What to look at: the tokens made mostly of flagged redundant points (clutter, supports) get much less weight
than the others (the numbers printed above). With these stand-in features that is simply because such tokens lie
far from the sample's centre of mass in feature space, which is exactly what the anchor distance measures. With
`T = 0.07` the weights are sharp: a few central tokens dominate. In the trained model `T`, α (which sets the
scale of the distances) and the transformer all change this picture; chapter 08 looks at trained weights.

Two properties that the official code does not have, checked here and in `tests/test_aggregation.py`:

* **padding changes nothing**: appending padded tokens (even NaN) with mask `False` gives the same weights;
* **one valid token** gives weight 1 and a finite gradient, although that token *is* the anchor (distance 0).
"""),
    code("""
garbage = torch.full((1, 7, z.shape[-1]), float("nan"))
z_pad = torch.cat([z, garbage], dim=1)
m_pad = torch.cat([tok_mask[None], torch.zeros(1, 7, dtype=torch.bool)], dim=1)
emb_pad, w_pad = aggregate(z_pad, m_pad, c=1.0, temperature=0.07)
print("padding changes the embedding by", float((emb_pad - emb).abs().max()))

one = z[:, :3].clone().requires_grad_(True)
e1, w1 = aggregate(one, torch.tensor([[True, False, False]]), c=1.0, temperature=0.07)
e1.sum().backward()
print("one valid token -> weights", w1.tolist()[0], "| gradient finite:", bool(torch.isfinite(one.grad).all()))
"""),
    md("""
## 3 · Entailment cones in the Poincaré disk

The hierarchical-ordering loss treats a caption as *more generic* than its shape: the text embedding `t` is the
apex of a cone, and the 3D embedding `p` must lie inside it:

`L_ord = mean over positive pairs of relu( ext(t, p) − φ(t) )`, with `φ(t) = asin(2K / (√c‖t_s‖))` the
half-aperture (`K = 0.1`) and `ext(t, p)` the exterior angle at `t` of the triangle (origin, t, p).

Cones are wide near the origin and narrow far from it, so generic texts sit near the origin and specific shapes
further out. We draw each cone by testing a grid of disk points (`from_poincare` + `ext ≤ φ`), then run a few
steps of the cone loss alone on a 2-D toy (three captions, two shapes each) and draw again.
"""),
    code("""
torch.manual_seed(seed)
c2 = torch.tensor(1.0)
text_dirs = torch.tensor([[1.0, 0.2], [-0.6, 0.9], [-0.3, -1.0]])
text_v = torch.nn.Parameter(0.9 * text_dirs / text_dirs.norm(dim=-1, keepdim=True))     # tangent vectors
cloud_v = torch.nn.Parameter(torch.randn(6, 2) * 1.2)                                   # two clouds per text
pair_text = torch.tensor([0, 0, 1, 1, 2, 2])
pos = pair_text[:, None] == torch.arange(3)[None]                                      # (clouds, texts)
pos = pos.t()                                                                          # (texts, clouds)

gx = torch.linspace(-0.98, 0.98, 240)
grid = torch.stack(torch.meshgrid(gx, gx, indexing="xy"), dim=-1).reshape(-1, 2)
inside_disk = grid.norm(dim=-1) < 0.98
grid_h = L.from_poincare(grid[inside_disk].double(), 1.0)

def draw(ax, title):
    t = L.expmap0(text_v.detach().double(), 1.0)
    p = L.expmap0(cloud_v.detach().double(), 1.0)
    colours = ["tab:red", "tab:blue", "tab:green"]
    for i in range(3):
        inside = L.exterior_angle(t[i].expand_as(grid_h), grid_h, 1.0) <= L.half_aperture(t[i], 1.0, 0.1)
        img = torch.zeros(len(grid)); img[inside_disk] = inside.float()
        ax.contourf(gx, gx, img.reshape(len(gx), len(gx)), levels=[0.5, 1.5], colors=[colours[i]], alpha=0.18)
        tp = L.to_poincare(t[i], 1.0)
        ax.scatter(*tp, marker="*", s=160, color=colours[i], edgecolor="k", zorder=3)
    pp = L.to_poincare(p, 1.0)
    for j in range(6):
        ax.scatter(*pp[j], marker="o", s=40, color=colours[int(pair_text[j])], edgecolor="k", zorder=3)
    ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="k"))
    ax.set_aspect("equal"); ax.set_xlim(-1.02, 1.02); ax.set_ylim(-1.02, 1.02); ax.set_axis_off()
    ax.set_title(title, fontsize=9)

def cone_loss():
    return entailment_cone_loss(L.expmap0(text_v, c2), L.expmap0(cloud_v, c2), pos, c2, 0.1)

fig, axes = plt.subplots(1, 2, figsize=(10, 5))
loss0, active0 = cone_loss()
draw(axes[0], f"before: L_ord = {loss0.item():.3f}, {active0:.0%} of pairs outside")
opt = torch.optim.Adam([text_v, cloud_v], lr=0.03)
history = []
for step in range(cfg["cone_steps"]):
    loss, active = cone_loss()
    opt.zero_grad(); loss.backward(); opt.step()
    history.append(loss.item())
loss1, active1 = cone_loss()
draw(axes[1], f"after {cfg['cone_steps']} steps: L_ord = {loss1.item():.3f}, {active1:.0%} outside")
save_figure(fig, "05_entailment_cones")
plt.show()
print(f"cone loss {loss0.item():.3f} -> {loss1.item():.3f}")
"""),
    md("""
Stars are captions (apexes), dots their shapes, shaded regions the cones. Alone, the cone loss happily moves the
captions toward the origin, where cones are widest: that is why it is only a regulariser (weight 0.2) next to
the contrastive loss, which keeps different captions apart.

## 4 · The contrastive logits matrix

Now the whole model on a toy batch. A batch is a list of (caption, cloud) links; captions of one shape share its
cloud, so the positive mask is `pc_idx[i] == pc_idx[j]`, **not** the identity: several entries per row can be
positive (outlined below). Logits are `−d_L(h_t, h_p)/τ` with `τ = 0.07`.

The toy tokens are random (a "cloud" is a random token set, its captions some of its tokens mapped to the text width
by a fixed random matrix, plus noise), so the model can learn the matching in a few dozen steps on the CPU.
"""),
    code("""
torch.manual_seed(seed)
n_pairs, d_model = cfg["toy_pairs"], cfg["d_model"]
n_clouds = n_pairs // 2 + 1
pc_idx = torch.arange(n_pairs) % n_clouds                       # some clouds get two captions
clouds = torch.randn(n_clouds, 10, 24)
txt_map = torch.randn(24, 20) / 24 ** 0.5
txt = clouds[pc_idx, :6] @ txt_map + 1.0 * torch.randn(n_pairs, 6, 20)
txt_mask = torch.ones(n_pairs, 9, dtype=torch.bool)
txt = torch.cat([txt, torch.zeros(n_pairs, 3, 20)], dim=1)
txt_mask[:, 6:] = False                                          # three padding tokens per caption
txt_mask[::3, 4:] = False                                        # and some shorter captions
pc, pc_mask = clouds[pc_idx], torch.ones(n_pairs, 10, dtype=torch.bool)

model = H2ARN(ModelConfig(d_txt=20, d_pcd=24, d_model=d_model, nhead=4, num_layers=cfg["layers"],
                          dropout=0.0)).to(dev)
criterion = H2ARNLoss(LossConfig(tau=0.07, cone_weight=0.2, K=0.1))
batch = [x.to(dev) for x in (txt, txt_mask, pc, pc_mask)]
pc_idx = pc_idx.to(dev)

def logits_now():
    with torch.no_grad():
        t, p = model(*batch)
        return (model.similarity(t, p) / 0.07).cpu()

before = logits_now()
opt = torch.optim.AdamW(model.param_groups(0.01), lr=3e-3)
logs_hist = []
threads = torch.get_num_threads()
torch.set_num_threads(1)          # matrices this small run faster on one CPU thread than on two competing ones
try:
    for step in range(cfg["toy_steps"]):
        t, p = model(*batch)
        loss, logs = criterion(model, t, p, pc_idx)
        opt.zero_grad(); loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); model.project_parameters_()   # keep the raw log-parameters inside their bounds
        logs_hist.append(logs)
finally:
    torch.set_num_threads(threads)
after = logits_now()
{k: round(v, 4) for k, v in logs_hist[-1].items()}
"""),
    code("""
posm = positive_mask(pc_idx.cpu())
fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), layout="constrained")
for ax, mat, title in ((axes[0], before, "logits −d_L/τ, untrained"), (axes[1], after, f"after {cfg['toy_steps']} steps")):
    im = ax.imshow(mat, cmap="viridis")
    ys, xs = torch.nonzero(posm, as_tuple=True)
    ax.scatter(xs, ys, marker="s", s=60, facecolors="none", edgecolors="r", linewidths=1)
    ax.set(title=title, xlabel="cloud (batch column)", ylabel="caption (batch row)")
    fig.colorbar(im, ax=ax, fraction=0.046)
for key in ("contrastive", "entailment", "entail_active_frac"):
    axes[2].plot([h[key] for h in logs_hist], label=key)
axes[2].set(xlabel="step", title="logged loss terms"); axes[2].legend()
save_figure(fig, "05_contrastive_logits")
plt.show()
print("learnable scalars:", {k: round(v, 4) for k, v in model.scalars().items()})
"""),
    md("""
## 5 · Checks

The cells above must have produced what the text claims; if one of these fails, something in the package is
wrong (the full set of checks is in `tests/test_model.py`, `tests/test_losses.py`, `tests/test_aggregation.py`).
"""),
    code("""
assert float((emb_pad - emb).abs().max()) < 1e-5, "padding changed the embedding"
assert bool(torch.isfinite(one.grad).all())
assert loss1.item() < loss0.item(), "the cone loss did not decrease"
assert logs_hist[-1]["contrastive"] < logs_hist[0]["contrastive"], "the contrastive loss did not decrease"
own = after.diagonal()[:, None]                                   # column i holds caption i's own cloud
print("rank of each caption's own cloud after training:", (1 + (after > own).sum(1)).tolist())
print("all checks passed")
"""),
]

if __name__ == "__main__":
    print(write("05_model_and_losses.ipynb", cells))
