"""Write notebooks/00_overview.ipynb and notebooks/01_lorentz_geometry.ipynb (clean, no outputs)."""
from nbtools import code, md, params, write

ENV_CELL = """
import platform, torch, h2arn
from h2arn.device import resolve_device
dev = resolve_device(device)
print(f"h2arn {h2arn.__version__} | torch {torch.__version__} | python {platform.python_version()} | device: {dev}")
"""

overview = [
    md("""
# 00 · H2ARN in one page

**Paper.** Li et al., *Hyperbolic Hierarchical Alignment Reasoning Network for Text-3D Retrieval* (H2ARN),
AAAI-26, arXiv 2511.11045.

**Task.** Given a sentence, find the 3D point cloud it describes (text→3D), and given a point cloud, find its
captions (3D→text). The benchmark is T3DR-HIT v2: 8,935 text-3D pairs, cultural artefacts (`Elephant/`) and
indoor scenes (`S3DIS/`).

**Two problems the paper names.**

1. **Hierarchy Representation Collapse (HRC).** Language is hierarchical: *"a vessel"* ⊃ *"a vase"* ⊃
   *"a tall blue vase with two handles"*. A tree's number of nodes grows exponentially with depth, but
   Euclidean space only grows polynomially, so abstract and specific descriptions get squeezed together.
   Hyperbolic space grows exponentially: trees fit with low distortion. → chapters 01 and 02.
2. **Redundancy-Induced Saliency Dilution (RISD).** A point cloud is encoded as many local tokens; many are
   redundant (floor, walls, repeated parts). Averaging them drowns the few discriminative ones. H2ARN weights
   each token by its hyperbolic distance to an anchor. → chapter 03.

**The method.**
1. *Frozen token features* (step 1): text → CLIP last hidden state (77 × 512), point cloud → DGCNN per-point
   features pooled into 100 local tokens (100 × 512). → chapter 04.
2. *Per-modality transformer* (6 Pre-LN layers, 64 heads), a learnable scale α, and a **lift onto the Lorentz
   hyperboloid** with a learnable curvature c.
3. *Contribution-aware hyperbolic aggregation*: anchor = mean token; weight_i = softmax(−d_L(token_i, anchor)/T);
   the global embedding is the lift of the weighted sum.
4. *Losses*: multi-positive contrastive loss on hyperbolic similarity + 0.2 × an **entailment-cone loss**
   (the text is the apex of a cone that must contain its 3D shape: text is more general than the shape).
   → chapter 05, trained in 06, evaluated in 07.

**Reported result** (paper, T3DR-HIT v2): Rsum 238.5 (text→3D R@1/5/10 = 16.4/44.5/60.6; 3D→text
19.6/42.3/55.1) vs. 220.3 for the predecessor RMARN and 196.3 for a Euclidean mean-pooling baseline.
"""),
    md("""
## What this course does differently from the official code

| Official code | Here |
|---|---|
| PointNet / PointNet++ extraction options crash | every encoder works and is tested (04) |
| encoder weights loaded with `strict=False` → silently random features | strict loading with a key map and a clear error |
| model selected on the **test** split | a validation split; test is touched once (06, 07) |
| padding tokens take part everywhere | attention masks end to end |
| inference silently evaluates an untrained model if the checkpoint is missing | a clear error |
| data only on Baidu | a deterministic generated benchmark with the same two halves runs offline (02) |
| `acosh` distances with float32-no-op epsilons | stable chord/asinh formulas, dtype-aware epsilons, property tests (01) |

## Course map

| # | notebook | what you learn |
|---|---|---|
| 00 | overview | this page |
| 01 | Lorentz geometry | hyperboloid, distances, exp/log maps, entailment cones; exercises |
| 02 | hierarchy collapse (HRC) | trees in Euclidean vs hyperbolic space, measured |
| 03 | saliency dilution (RISD) | mean pooling vs contribution weighting, measured |
| 04 | feature extraction | PointNet / PointNet++ / DGCNN tokens, text encoders |
| 05 | model and losses | every piece of H2ARN, step by step |
| 06 | training | the full run (GPU: paper configuration) |
| 07 | evaluation and ablations | results table vs the paper, galleries, hierarchy check |
| 08 | interactive retrieval | type a query, move the curvature, see the tokens |
| 09 | beyond | retrieval at scale, a study the paper does not have |
"""),
    params("""
profile = "ci"      # "ci": small and CPU-friendly; "full": paper-sized (GPU recommended)
device = "auto"     # "auto" picks cuda when available
seed = 0
"""),
    md("First, what are we running on? Every chapter starts by printing this, so a shared executed notebook says where its numbers came from."),
    code(ENV_CELL),
    md("""
## The whole method in a dozen lines

Below, random vectors stand in for the transformer's output tokens of one caption and one point cloud.
Everything else is the real package: lift to the hyperboloid, weigh each token by its distance to the
anchor, aggregate, and compare the two global embeddings by hyperbolic distance.
"""),
    code("""
import torch
from h2arn import lorentz as L

torch.manual_seed(seed)
c, T, alpha = 1.0, 0.07, 512 ** -0.5
text_tokens = torch.randn(77, 512) * alpha            # stand-ins for encoder outputs
cloud_tokens = torch.randn(100, 512) * alpha

def aggregate(tokens):
    anchor = tokens.mean(0, keepdim=True)
    d = L.dist(L.expmap0(tokens, c), L.expmap0(anchor, c), c)   # distance of each token to the anchor
    weights = torch.softmax(-d / T, dim=0)                      # close to the consensus -> more weight
    return L.expmap0((weights[:, None] * tokens).sum(0), c), weights

h_text, w_text = aggregate(text_tokens)
h_cloud, w_cloud = aggregate(cloud_tokens)
print("embedding on the hyperboloid:", h_text.shape, " -c<h,h>_L =", float(-c * L.inner(h_text, h_text)))
print("text-to-cloud distance:", float(L.dist(h_text, h_cloud, c)))
print("largest / smallest token weight:", float(w_cloud.max()), float(w_cloud.min()))
"""),
    md("## The pipeline, drawn"),
    code("""
import matplotlib.pyplot as plt
from h2arn.paths import save_figure

stages = ["caption / point cloud", "frozen encoder\\n(CLIP / DGCNN tokens)", "Pre-LN transformer\\n+ scale α",
          "lift to hyperboloid\\n(curvature c)", "contribution-aware\\naggregation", "contrastive +\\nentailment-cone loss"]
fig, ax = plt.subplots(figsize=(12, 1.8))
for i, s in enumerate(stages):
    ax.text(i * 2.1, 0, s, ha="center", va="center", fontsize=9,
            bbox=dict(boxstyle="round,pad=0.4", fc="#dfe9f7" if i % 2 else "#f7efdf", ec="0.4"))
    if i:
        ax.annotate("", xy=(i * 2.1 - 0.95, 0), xytext=(i * 2.1 - 1.15, 0), arrowprops=dict(arrowstyle="->"))
ax.set_xlim(-1.1, 2.1 * (len(stages) - 1) + 1.1); ax.set_ylim(-0.6, 0.6); ax.axis("off")
save_figure(fig, "00_pipeline");
"""),
    md("""
## How to run this course

* `./course run` executes every chapter in order (profile `ci`, minutes on a laptop CPU) into
  `build/notebooks/ci/`; `./course run --profile full` runs the paper-sized versions (use a GPU).
* `./course test` runs the test-suite, which also executes every chapter.
* Open the notebooks in JupyterLab to read and experiment; each runs top to bottom on its own and builds or
  loads whatever it needs (data, features, checkpoints) through the `h2arn` package, caching under `build/`.

Next: **01 · Lorentz geometry**.
"""),
]

geometry = [
    md("""
# 01 · Lorentz geometry

This chapter builds the geometry everything else stands on, and checks each formula numerically.

1. Why hyperbolic space: volume growth versus trees
2. The hyperboloid and its Poincaré projection
3. Geodesics and distances
4. What curvature does
5. Exp and log maps, and why the *formula* you pick matters in float32
6. Entailment cones
7. Exercises (with automatic checks)

**One convention, everywhere in this course.** Curvature is −c with **c > 0**; points satisfy
⟨x, x⟩_L = −1/c with the *time coordinate first*: x = (x₀, x₁, …, x_d), and
⟨x, y⟩_L = −x₀y₀ + x₁y₁ + … + x_d y_d. (geoopt writes k = 1/c; the official H2ARN code puts time last.)
"""),
    params("""
profile = "ci"
device = "auto"
seed = 0
resolution = 200    # grid size for the cone pictures (full: 400)
"""),
    code("""
resolution = {"ci": resolution, "full": max(resolution, 400)}[profile]
""" + ENV_CELL + """
import math
import matplotlib.pyplot as plt
import numpy as np
import torch
from h2arn import lorentz as L, plots
from h2arn.paths import save_figure
torch.manual_seed(seed)
"""),
    md("""
## 1. Why hyperbolic space?

A tree with branching factor b has bᵈ nodes at depth d: **exponential** growth. Place the root at the centre of a
disk and the depth-d nodes on the circle of radius d. In the Euclidean plane that circle has length 2πd, so the
nodes must get closer and closer: the tree is crushed (this is the hierarchy collapse of chapter 02).
In the hyperbolic plane of curvature −1 the circle has length 2π sinh(d) ≈ π eᵈ, exponential like the tree.
"""),
    code("""
depth = np.arange(0, 9)
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.semilogy(depth, 3.0 ** depth, "o-", label="nodes of a 3-ary tree at depth d")
ax.semilogy(depth, 2 * np.pi * np.maximum(depth, 1e-9), "s-", label="Euclidean circle length 2πd")
ax.semilogy(depth, 2 * np.pi * np.sinh(depth), "^-", label="hyperbolic circle length 2π sinh d")
ax.set_xlabel("depth / radius d"); ax.legend(fontsize=8); ax.set_title("room at distance d")
save_figure(fig, "01_volume_growth");
"""),
    md("""
## 2. The hyperboloid and the Poincaré disk

The Lorentz model is the upper sheet of x₀² − x₁² − x₂² = 1/c. It is numerically friendly (no boundary at
finite distance), but hard to look at. The **Poincaré disk** is its stereographic projection from
(−1/√c, 0, 0): p = x_s / (1 + √c x₀), a disk of radius 1/√c where the boundary is infinitely far away.
`L.to_poincare` and `L.from_poincare` convert; we use the disk only for pictures.
"""),
    code("""
c = 1.0
v = torch.randn(12, 2, dtype=torch.float64) * 1.2            # tangent vectors at the origin
x = L.expmap0(v, c)                                           # points on the hyperboloid (12, 3)
p = L.to_poincare(x, c)
print("on the hyperboloid:", torch.allclose(-c * L.inner(x, x), torch.ones(12, dtype=torch.float64)))
print("round trip disk -> hyperboloid:", torch.allclose(L.from_poincare(p, c), x))

fig = plt.figure(figsize=(10, 4.2))
ax3 = fig.add_subplot(1, 2, 1, projection="3d")
r, th = np.meshgrid(np.linspace(0, 2.2, 30), np.linspace(0, 2 * np.pi, 60))
ax3.plot_surface(np.sinh(r) * np.cos(th), np.sinh(r) * np.sin(th), np.cosh(r), alpha=0.15, color="tab:blue")
xn, pn = x.numpy(), p.numpy()
ax3.scatter(xn[:, 1], xn[:, 2], xn[:, 0], color="tab:red", s=15)
for xi, pi in zip(xn, pn):   # projection rays towards (-1, 0, 0) in (x0, x1, x2)
    ax3.plot([xi[1], pi[0]], [xi[2], pi[1]], [xi[0], 0], color="0.5", lw=0.5)
ax3.scatter(pn[:, 0], pn[:, 1], 0 * pn[:, 0], color="tab:green", s=10)
ax3.set_title("hyperboloid (time up) and the disk at x₀=0")
plots.disk_axes(fig.add_subplot(1, 2, 2), c, "the same points in the Poincaré disk")
plots.draw_points(fig.axes[-1], x, c, color="tab:red")
save_figure(fig, "01_hyperboloid_and_disk");
"""),
    md("""
## 3. Geodesics and distances

The geodesic distance is d(x, y) = (1/√c) · arccosh(−c⟨x, y⟩_L). Geodesics look like circular arcs meeting the
boundary at right angles in the disk: the shortest path between two points far from the centre **bends towards
the centre**, because distances near the boundary are huge. The grey circles are hyperbolic circles of radius
1, 2, 3, … around the origin: equally spaced in hyperbolic distance, crowded near the rim.
"""),
    code("""
a = L.expmap0(torch.tensor([[2.5, 0.3]], dtype=torch.float64), c)[0]
b = L.expmap0(torch.tensor([[-0.5, 2.6]], dtype=torch.float64), c)[0]
o = L.origin(2, c, dtype=torch.float64)
fig, ax = plt.subplots(figsize=(4.5, 4.5))
plots.disk_axes(ax, c, "geodesics in the Poincaré disk")
plots.draw_geodesic(ax, a, b, c, color="tab:red", label=f"d(a,b) = {float(L.dist(a, b, c)):.2f}")
plots.draw_geodesic(ax, o, a, c, color="tab:blue", label=f"d(o,a) = {float(L.dist(o, a, c)):.2f}")
plots.draw_geodesic(ax, o, b, c, color="tab:green", label=f"d(o,b) = {float(L.dist(o, b, c)):.2f}")
plots.draw_points(ax, torch.stack([o, a, b]), c, labels=["o", "a", "b"], color="black")
ax.legend(fontsize=8, loc="lower left")
save_figure(fig, "01_geodesics")
print("triangle inequality:", float(L.dist(a, b, c)), "<=", float(L.dist(a, o, c) + L.dist(o, b, c)))
"""),
    md("""
Retrieval needs **all pairs** of distances between N texts and M shapes. Flipping the sign of the time coordinate
turns ⟨x, y⟩_L into an ordinary dot product, so the whole N × M matrix is **one matrix multiplication**
(`L.pairwise_dist`). The benchmark `benchmarks/bench_lorentz.py` measures it against a plain matmul.
"""),
    code("""
X = L.expmap0(torch.randn(500, 16), c); Y = L.expmap0(torch.randn(300, 16), c)
D = L.pairwise_dist(X, Y, c)
print(D.shape, "max |pairwise - elementwise| =", float((D - L.dist(X[:, None], Y[None], c)).abs().max()))
"""),
    md("""
## 4. What curvature does

The same tangent vectors, mapped with different curvatures: larger c means a more curved space, a smaller disk
(radius 1/√c), and points that are *farther apart* for the same tangent length. H2ARN learns c during training
(chapter 06 plots it).
"""),
    code("""
vs = torch.tensor([[1.0, 0.0], [0.0, 1.5], [-1.2, -0.8]], dtype=torch.float64)
fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
for ax, cc in zip(axes, [0.25, 1.0, 4.0]):
    pts = L.expmap0(vs, cc)
    plots.disk_axes(ax, cc, f"c = {cc}: d(p0,p1) = {float(L.dist(pts[0], pts[1], cc)):.2f}")
    plots.draw_points(ax, pts, cc, labels=["p0", "p1", "p2"], color="tab:red")
    for i in range(3):
        plots.draw_geodesic(ax, pts[i], pts[(i + 1) % 3], cc, color="tab:red", lw=1)
save_figure(fig, "01_curvature");
"""),
    md("""
## 5. Exp and log maps, and float32

The exponential map at the origin sends a tangent vector v (an ordinary Euclidean vector) onto the
hyperboloid: x_s = sinh(√c‖v‖)/(√c‖v‖) · v. The log map inverts it. Two textbook-equivalent formulas for the log
map behave very differently in float32:

* via the time coordinate: ‖v‖ = arccosh(√c x₀)/√c — near the origin x₀ ≈ 1/√c and the information is lost;
* via the space part: ‖v‖ = arcsinh(√c‖x_s‖)/√c — accurate at every radius. This is what `L.logmap0` uses.
"""),
    code("""
radii = torch.logspace(-6, 1, 50, dtype=torch.float64)
v64 = torch.stack([radii, torch.zeros_like(radii)], -1)
x32 = L.expmap0(v64, c).float()
via_time = torch.acosh((math.sqrt(c) * x32[:, 0]).clamp_min(1.0)) / math.sqrt(c)
via_space = L.logmap0(x32, c).norm(dim=-1)
rel = lambda est: ((est.double() - radii).abs() / radii).numpy()
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.loglog(radii, rel(via_time) + 1e-17, label="arccosh(time)   (float32)")
ax.loglog(radii, rel(via_space) + 1e-17, label="arcsinh(space)  (float32, L.logmap0)")
ax.set_xlabel("tangent norm ‖v‖"); ax.set_ylabel("relative error"); ax.legend(fontsize=8)
save_figure(fig, "01_logmap_float32")
print("round trip log(exp(v)) max error (float64):", float((L.logmap0(L.expmap0(v64, c), c) - v64).abs().max()))
"""),
    md("""
The same care applies to distances. For two *nearby* points arccosh(−c⟨x,y⟩_L) cancels catastrophically
(and its gradient at x = y is infinite: NaN in training when a token equals its anchor). `L.dist` uses the chord
form 2/√c · arcsinh(√(c/2 ⟨x−y, x−y⟩_L / 2)) for near pairs, whose gradient is finite even at x = y:
"""),
    code("""
xg = L.expmap0(torch.randn(4, 8), c).requires_grad_(True)
L.dist(xg, xg.detach().clone(), c).sum().backward()
print("d(x, x) =", L.dist(xg, xg, c).detach().tolist())
print("gradient finite:", bool(torch.isfinite(xg.grad).all()))
"""),
    md("""
## 6. Entailment cones

H2ARN orders text above 3D: a caption is *more general* than the shape it describes. Following Ganea et al. (2018)
and MERU (2023), each point x owns a cone with half-aperture ω(x) = arcsin(2K / (√c‖x_s‖)); a point y is
*entailed* by x when the exterior angle of the triangle (origin, x, y) at x is at most ω(x). Points near the origin
(abstract concepts) own wide cones; points far out (specific ones) own narrow cones. In H2ARN the **text is the
apex** and its 3D shape must lie inside.
"""),
    code("""
K = 0.1
apexes = L.expmap0(torch.tensor([[0.35, 0.0], [1.2, 1.0], [-2.0, 0.6]], dtype=torch.float64), c)
fig, ax = plt.subplots(figsize=(4.8, 4.8))
plots.disk_axes(ax, c, f"entailment cones (K = {K})")
for apex, color, name in zip(apexes, ["tab:blue", "tab:orange", "tab:green"], ["abstract", "middle", "specific"]):
    plots.draw_cone(ax, apex, c, K, resolution=resolution, color=color, label=name)
save_figure(fig, "01_entailment_cones")
print("half-apertures (rad):", [round(float(a), 3) for a in L.half_aperture(apexes, c, K)])
"""),
    md("""
## 7. Exercises

Implement each function from the formulas above **without** calling the matching `h2arn.lorentz` function
(you may use `L.inner`). The `check` call compares your function with the package on random inputs over several
curvatures and both float32 and float64, and tells you what is wrong. Instructors: the cells tagged `solution`
become stubs in the student version (`python -m h2arn.assignments generate`).
"""),
    code("""
from h2arn.assignments import check
"""),
    code('''
def my_expmap0(v, c):
    """Exp map at the origin: space-only tangent (..., D) -> point (..., D+1), time first."""
    sqrt_c = math.sqrt(c)
    r = (sqrt_c * v.norm(dim=-1, keepdim=True)).clamp_min(1e-15)
    space = torch.sinh(r) / r * v
    time = torch.sqrt(1.0 / c + (space * space).sum(-1, keepdim=True))
    return torch.cat([time, space], dim=-1)
''', tags=["solution"]),
    code('check("expmap0", my_expmap0)'),
    code('''
def my_logmap0(x, c):
    """Log map at the origin: point (..., D+1) -> space-only tangent (..., D). Use arcsinh, not arccosh."""
    sqrt_c = math.sqrt(c)
    space = x[..., 1:]
    r = (sqrt_c * space.norm(dim=-1, keepdim=True)).clamp_min(1e-15)
    return torch.asinh(r) / r * space
''', tags=["solution"]),
    code('check("logmap0", my_logmap0)'),
    code('''
def my_dist(x, y, c):
    """Geodesic distance between points (..., D+1) on the hyperboloid of curvature -c."""
    z = (-c * L.inner(x, y)).clamp_min(1.0)
    return torch.acosh(z) / math.sqrt(c)
''', tags=["solution"]),
    code('check("dist", my_dist)'),
    code('''
def my_half_aperture(x, c, K=0.1):
    """Half-aperture arcsin(2K / (sqrt(c) ||x_s||)) of the entailment cone at x, clamped into (0, pi/2)."""
    eps = 4 * torch.finfo(x.dtype).eps
    ratio = 2 * K / (math.sqrt(c) * x[..., 1:].norm(dim=-1).clamp_min(eps))
    return torch.asin(ratio.clamp(max=1 - eps))
''', tags=["solution"]),
    code('check("half_aperture", my_half_aperture)'),
    code('''
def my_exterior_angle(x, y, c):
    """Exterior angle at x of the triangle (origin, x, y)."""
    eps = 4 * torch.finfo(x.dtype).eps           # 1 - eps must differ from 1 in this dtype
    c_inner = c * L.inner(x, y)
    numer = y[..., 0] + c_inner * x[..., 0]
    denom = x[..., 1:].norm(dim=-1) * torch.sqrt((c_inner ** 2 - 1).clamp_min(eps))
    return torch.acos((numer / denom.clamp_min(eps)).clamp(-1 + eps, 1 - eps))
''', tags=["solution"]),
    code('check("exterior_angle", my_exterior_angle)'),
    md("""
## Summary

* One convention: c > 0, ⟨x,x⟩_L = −1/c, time first. `from h2arn import lorentz as L`.
* Distances between all pairs are one matrix product; near pairs need the chord form.
* Formulas that are equal on paper differ by orders of magnitude in float32: the package picks the stable ones and
  its tests (`tests/test_lorentz.py`) check them over dtypes and curvatures.
* Entailment cones turn "is more general than" into geometry.

Next: **02 · hierarchy collapse**, measured.
"""),
]

if __name__ == "__main__":
    print(write("00_overview.ipynb", overview))
    print(write("01_lorentz_geometry.ipynb", geometry))
