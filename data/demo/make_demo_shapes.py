"""Write the demo gallery's meshes (``data/demo/shapes/``): simple objects built from primitives by this script.

Why built here: they are ours (the repository's licence), need no download, and cover the benchmark's
categories (vase, bottle, cup, bowl, jar, table, chair, stool, lamp) in every mesh format the search reads
(OBJ, PLY, OFF, STL, GLB), y-up. ``airplane.ply`` and ``ant.ply`` (two shapes no benchmark category covers)
come from the ``pyvista`` PyPI package's examples (MIT licence, see ``LICENSE-pyvista.txt``); they are
copied, not generated.

    python data/demo/make_demo_shapes.py      # rewrites data/demo/shapes/*, deterministic
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

OUT = Path(__file__).resolve().parent / "shapes"


def revolve(ys, rs, sections: int = 40) -> trimesh.Trimesh:
    """Surface of revolution about the y axis through the profile (r, y), closed at the bottom."""
    ys, rs = np.asarray(ys, float), np.asarray(rs, float)
    line = np.stack([rs, ys], axis=1)
    mesh = trimesh.creation.revolve(line, sections=sections)   # revolves about z
    mesh.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0]))  # z-up -> y-up
    return mesh


def smooth(knots_y, knots_r, n: int = 24):
    from scipy.interpolate import PchipInterpolator

    ys = np.linspace(knots_y[0], knots_y[-1], n)
    return ys, PchipInterpolator(knots_y, knots_r)(ys)


def box(center, size) -> trimesh.Trimesh:
    m = trimesh.creation.box(extents=size)
    m.apply_translation(center)
    return m


def cylinder_y(center, radius, height, sections: int = 24) -> trimesh.Trimesh:
    m = trimesh.creation.cylinder(radius=radius, height=height, sections=sections)
    m.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0]))
    m.apply_translation(center)
    return m


def handle(y_low, y_high, x_attach, side: float = 1.0, minor: float = 0.025) -> trimesh.Trimesh:
    """A half-torus handle in the x-y plane, attached at x = x_attach between two heights."""
    major = (y_high - y_low) / 2
    m = trimesh.creation.torus(major_radius=major, minor_radius=minor, major_sections=24, minor_sections=8)
    m.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))   # ring in the x-y plane
    keep = side * m.triangles_center[:, 0] >= 0          # the outer half of the ring
    m = trimesh.Trimesh(m.vertices, m.faces[keep], process=True)
    m.apply_translation([x_attach, (y_low + y_high) / 2, 0])
    return m


def union(*parts) -> trimesh.Trimesh:
    return trimesh.util.concatenate(parts)


def build() -> dict[str, trimesh.Trimesh]:
    vase_y, vase_r = smooth([0, 0.15, 0.45, 0.75, 0.9, 1.0], [0.12, 0.22, 0.25, 0.09, 0.08, 0.12])
    vase = union(revolve(vase_y, vase_r), handle(0.55, 0.85, 0.2, 1.0), handle(0.55, 0.85, -0.2, -1.0))
    bottle_y, bottle_r = smooth([0, 0.5, 0.62, 0.75, 1.0], [0.13, 0.13, 0.08, 0.04, 0.035])
    cup = union(revolve([0, 0.02, 0.3], [0.11, 0.12, 0.14]), handle(0.07, 0.25, 0.13, 1.0, 0.02))
    bowl_y, bowl_r = smooth([0, 0.05, 0.15, 0.25], [0.1, 0.22, 0.3, 0.33])
    jar_y, jar_r = smooth([0, 0.3, 0.6, 0.7, 0.78], [0.16, 0.22, 0.18, 0.1, 0.11])
    top, leg = 0.72, 0.05
    table = union(box([0, top, 0], [1.2, 0.05, 0.7]),
                  *[box([sx * 0.52, top / 2, sz * 0.28], [leg, top, leg]) for sx in (-1, 1) for sz in (-1, 1)])
    seat = 0.45
    chair = union(box([0, seat, 0], [0.45, 0.05, 0.45]), box([0, seat + 0.25, -0.2], [0.45, 0.5, 0.04]),
                  *[box([sx * 0.19, seat / 2, sz * 0.19], [0.04, seat, 0.04]) for sx in (-1, 1) for sz in (-1, 1)])
    stool = union(cylinder_y([0, 0.6, 0], 0.17, 0.04),
                  *[cylinder_y([0.12 * np.cos(a), 0.3, 0.12 * np.sin(a)], 0.02, 0.6, 12)
                    for a in np.linspace(0, 2 * np.pi, 3, endpoint=False)])
    shade_y, shade_r = [1.1, 1.45], [0.28, 0.14]
    lamp = union(cylinder_y([0, 0.02, 0], 0.18, 0.04), cylinder_y([0, 0.6, 0], 0.02, 1.1, 12),
                 revolve(shade_y, shade_r))
    return {"vase_two_handles.obj": vase, "bottle.ply": revolve(bottle_y, bottle_r), "cup.off": cup,
            "bowl.stl": revolve(bowl_y, bowl_r), "jar.glb": revolve(jar_y, jar_r), "table.obj": table,
            "chair.ply": chair, "stool.stl": stool, "lamp.off": lamp}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, mesh in build().items():
        mesh.export(OUT / name)
        print(f"{OUT / name}: {len(mesh.faces)} faces")


if __name__ == "__main__":
    main()
