"""Grid -> icosahedral mesh -> grid graph (GraphCast / GenCast style).

Dimension letters: G grid points (H * W), M mesh nodes, V mesh vertices of the full
sphere, F mesh faces, E edges, P query points.

Conventions (all stated once here, and relied on by the tests):

- **Positions** are unit vectors ``x = cos(lat) cos(lon)``, ``y = cos(lat) sin(lon)``,
  ``z = sin(lat)`` (degrees in, radians inside).
- **Icosahedron orientation** follows GraphCast: one face is centred on each pole, so the
  mesh has a 3-fold symmetry about the z axis and no mesh vertex ever lies on a pole (the
  face centre is never a midpoint-refinement vertex). Refinement splits every triangle
  into 4 through the (re-normalised) edge midpoints; the vertices of level ``l`` are the
  first ``10 * 4**l + 2`` vertices of every finer level, so the multi-mesh is a union of
  edge sets on the finest vertices.
- **Distances** are chord lengths (Euclidean distance in R^3 between unit vectors), as in
  GraphCast / GenCast. The grid-to-mesh radius is ``g2m_radius_factor`` (0.6, GenCast)
  times the longest chord of the finest mesh's edges.
- **Edge features** ``[|d|, d_x, d_y, d_z] / max|d|`` (4 per edge) with
  ``d = R_r (x_s - x_r)``: ``R_r = R_y(lat_r) R_z(-lon_r)`` rotates the receiver to
  latitude 0, longitude 0, i.e. to ``(1, 0, 0)``; in that frame ``+y`` points east and
  ``+z`` points north of the receiver. ``max|d|`` is the longest edge of that edge set
  (mesh, grid-to-mesh or mesh-to-grid separately). The features are invariant under any
  rotation of the sphere about the z axis.
- **Node features** ``[cos lat, sin lon, cos lon]`` (structural only).

Regional (limited-area) grids: the mesh covers the domain only. The domain is the union of
the grid's cells (bounds from :mod:`diffsci.weather.grid`: midpoints between rows/columns,
the end rows/columns extended by half a spacing, latitude clipped at +-90); icosahedral mesh
nodes outside it are dropped, with their edges, and all edges are re-indexed. A grid point
whose containing triangle lost a vertex (a point near the domain edge) gets its three mesh ->
grid edges from the three nearest kept mesh nodes instead, so every grid point still hears
from exactly three mesh nodes. Any kept mesh node without a radius edge (or, on a coarse
global grid with a fine mesh, a node farther than the radius from every grid point) gets one
grid-to-mesh edge from its nearest grid point, so every mesh node hears from the grid.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from diffsci.core.errors import DiffsciError

__all__ = [
    "GridMeshGraph",
    "icosahedral_mesh",
    "icosahedral_mesh_levels",
    "mesh_edges",
    "multimesh_edges",
    "latlon_to_xyz",
    "xyz_to_latlon",
    "local_frame_rotations",
    "relative_edge_features",
    "node_features",
    "containing_triangles",
    "is_global_grid",
    "build_graph",
    "cached_graph",
]

_GRAPH_FORMAT_VERSION = 2  # 2: regional meshes cover the domain only
_MAX_REFINEMENTS = 7


@dataclass(frozen=True)
class GridMeshGraph:
    """A grid -> mesh -> grid graph, as tensors ready for message passing.

    Attributes
    ----------
    grid_latlon : Tensor
        Shape (G, 2), float32 degrees (lat, lon); grid flattened row-major so that an
        (H, W) field ``.reshape(-1)`` lines up with it.
    mesh_pos : Tensor
        Shape (M, 3), float32 unit vectors.
    mesh_edge_index : Tensor
        Shape (2, E_m), int64 (sender, receiver); every edge is present in both directions.
    mesh_edge_attr : Tensor
        Shape (E_m, 4), float32 ``[length, dx, dy, dz]`` in the receiver's local frame.
    g2m_edge_index : Tensor
        Shape (2, E_g2m), int64: row 0 grid index, row 1 mesh index.
    g2m_edge_attr : Tensor
        Shape (E_g2m, 4).
    m2g_edge_index : Tensor
        Shape (2, E_m2g), int64: row 0 mesh index, row 1 grid index; exactly 3 edges per
        grid point (the vertices of the mesh triangle holding it), grouped by grid point.
    m2g_edge_attr : Tensor
        Shape (E_m2g, 4).
    grid_node_attr : Tensor
        Shape (G, 3) ``[cos lat, sin lon, cos lon]``.
    mesh_node_attr : Tensor
        Shape (M, 3) ``[cos lat, sin lon, cos lon]``.
    """

    grid_latlon: Tensor
    mesh_pos: Tensor
    mesh_edge_index: Tensor
    mesh_edge_attr: Tensor
    g2m_edge_index: Tensor
    g2m_edge_attr: Tensor
    m2g_edge_index: Tensor
    m2g_edge_attr: Tensor
    grid_node_attr: Tensor
    mesh_node_attr: Tensor

    @property
    def num_grid(self) -> int:
        return int(self.grid_latlon.shape[0])

    @property
    def num_mesh(self) -> int:
        return int(self.mesh_pos.shape[0])

    @property
    def edge_dim(self) -> int:
        return int(self.mesh_edge_attr.shape[1])

    @property
    def node_dim(self) -> int:
        return int(self.grid_node_attr.shape[1])

    def to(self, device: torch.device | str) -> "GridMeshGraph":
        """Return a copy with every tensor on ``device`` (the graph itself is unchanged)."""
        return dataclasses.replace(
            self, **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)}
        )

    def tensors(self) -> dict[str, Tensor]:
        """All fields as a plain dict of tensors (what the on-disk cache stores)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


# --------------------------------------------------------------------------------------
# Coordinates and frames
# --------------------------------------------------------------------------------------


def latlon_to_xyz(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Unit vectors from latitude/longitude in degrees.

    ``(cos lat cos lon, cos lat sin lon, sin lat)``; returns Shape (..., 3) float64.
    """
    lat = np.deg2rad(np.asarray(lat_deg, dtype=np.float64))
    lon = np.deg2rad(np.asarray(lon_deg, dtype=np.float64))
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def xyz_to_latlon(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Latitude in [-90, 90] and longitude in [0, 360) degrees of Shape (..., 3) vectors.

    At a pole the longitude is 0 by convention (``arctan2(0, 0)``).
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    xyz = xyz / np.linalg.norm(xyz, axis=-1, keepdims=True)
    lat = np.rad2deg(np.arcsin(np.clip(xyz[..., 2], -1.0, 1.0)))
    lon = np.mod(np.rad2deg(np.arctan2(xyz[..., 1], xyz[..., 0])), 360.0)
    return lat, lon


def local_frame_rotations(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Rotations taking each point to latitude 0, longitude 0.

    ``R = R_y(lat) R_z(-lon)`` with the right-handed ``R_z(a) = [[c, -s, 0], [s, c, 0],
    [0, 0, 1]]`` and ``R_y(a) = [[c, 0, s], [0, 1, 0], [-s, 0, c]]``, so
    ``R @ latlon_to_xyz(lat, lon) = (1, 0, 0)``; local east maps to ``+y`` and local north
    to ``+z``. Rotating the whole sphere about z by ``a`` adds ``a`` to every longitude,
    so ``R`` absorbs it: features built in this frame are invariant under it.

    Returns Shape (N, 3, 3) float64.
    """
    lat = np.deg2rad(np.asarray(lat_deg, dtype=np.float64).reshape(-1))
    lon = np.deg2rad(np.asarray(lon_deg, dtype=np.float64).reshape(-1))
    cp, sp = np.cos(lat), np.sin(lat)
    cl, sl = np.cos(lon), np.sin(lon)
    zero = np.zeros_like(lat)
    # R_z(-lon) = [[cl, sl, 0], [-sl, cl, 0], [0, 0, 1]]; R_y(lat) @ R_z(-lon):
    rot = np.stack(
        [
            np.stack([cp * cl, cp * sl, sp], axis=-1),
            np.stack([-sl, cl, zero], axis=-1),
            np.stack([-sp * cl, -sp * sl, cp], axis=-1),
        ],
        axis=-2,
    )
    return rot


def relative_edge_features(
    sender_xyz: np.ndarray,
    receiver_latlon: np.ndarray,
    senders: np.ndarray,
    receivers: np.ndarray,
    *,
    normaliser: float | None = None,
) -> np.ndarray:
    """GraphCast edge features in the receiver's local frame.

    ``d = R_r (x_s - x_r)`` with ``R_r`` from :func:`local_frame_rotations`; features are
    ``[|d|, d_x, d_y, d_z] / normaliser`` where ``normaliser`` defaults to ``max |d|`` over
    the edges (chord length; rotations keep it).

    Parameters
    ----------
    sender_xyz : np.ndarray
        Shape (N_s, 3) unit vectors of the sender nodes.
    receiver_latlon : np.ndarray
        Shape (N_r, 2) degrees of the receiver nodes (the frame is taken from lat/lon so a
        grid point on a pole keeps its nominal longitude).
    senders, receivers : np.ndarray
        Shape (E,) indices into the sender and receiver node sets.
    normaliser : float, optional
        Divide by this instead of the longest edge.

    Returns
    -------
    np.ndarray
        Shape (E, 4) float64.
    """
    senders = np.asarray(senders, dtype=np.int64)
    receivers = np.asarray(receivers, dtype=np.int64)
    receiver_latlon = np.asarray(receiver_latlon, dtype=np.float64)
    if senders.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    rot = local_frame_rotations(receiver_latlon[:, 0], receiver_latlon[:, 1])[receivers]
    receiver_xyz = latlon_to_xyz(receiver_latlon[:, 0], receiver_latlon[:, 1])[receivers]
    diff = np.asarray(sender_xyz, dtype=np.float64)[senders] - receiver_xyz
    local = np.einsum("eij,ej->ei", rot, diff)
    length = np.linalg.norm(local, axis=-1, keepdims=True)
    if normaliser is None:
        normaliser = float(length.max())
    if not normaliser > 0:
        normaliser = 1.0
    return np.concatenate([length, local], axis=-1) / normaliser


def node_features(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Structural node features ``[cos lat, sin lon, cos lon]``, Shape (N, 3) float64."""
    lat = np.deg2rad(np.asarray(lat_deg, dtype=np.float64).reshape(-1))
    lon = np.deg2rad(np.asarray(lon_deg, dtype=np.float64).reshape(-1))
    return np.stack([np.cos(lat), np.sin(lon), np.cos(lon)], axis=-1)


# --------------------------------------------------------------------------------------
# Icosahedral mesh
# --------------------------------------------------------------------------------------


def _base_icosahedron() -> tuple[np.ndarray, np.ndarray]:
    """The regular icosahedron on the unit sphere with a face centred on each pole.

    Vertices are the cyclic permutations of ``(0, +-1, +-phi)``; faces are the vertex
    triples that are pairwise at the edge distance 2, oriented counter-clockwise seen from
    outside. The whole solid is then rotated about the y axis so that the centre of the
    face ``{(0, 1, phi), (0, -1, phi), (phi, 0, 1)}`` lands on the north pole (the opposite
    face lands on the south pole).
    """
    phi = (1.0 + np.sqrt(5.0)) / 2.0
    raw = []
    for a in (1.0, -1.0):
        for b in (phi, -phi):
            raw += [(0.0, a, b), (a, b, 0.0), (b, 0.0, a)]
    verts = np.asarray(raw, dtype=np.float64)
    dist = np.linalg.norm(verts[:, None] - verts[None], axis=-1)
    adjacent = np.isclose(dist, 2.0)
    faces = []
    n = len(verts)
    for i in range(n):
        for j in range(i + 1, n):
            for k in range(j + 1, n):
                if adjacent[i, j] and adjacent[j, k] and adjacent[i, k]:
                    faces.append((i, j, k))
    faces = np.asarray(faces, dtype=np.int64)
    faces = _orient_outward(verts, faces)
    # Rotate about y so the chosen face centre (direction (phi, 0, 2 phi + 1)) goes to +z.
    centre = np.array([phi, 0.0, 2.0 * phi + 1.0])
    angle = np.arctan2(centre[0], centre[2])  # tilt of the centre away from +z, towards +x
    c, s = np.cos(-angle), np.sin(-angle)
    rot_y = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    verts = verts @ rot_y.T
    verts /= np.linalg.norm(verts, axis=-1, keepdims=True)
    return verts, faces


def _orient_outward(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Reorder each face (a, b, c) so that ``(b - a) x (c - a)`` points away from the origin."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    normal = np.cross(b - a, c - a)
    flip = np.einsum("ij,ij->i", normal, a + b + c) < 0
    faces = faces.copy()
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return faces


def _subdivide(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split every face into 4 through its edge midpoints, projected to the unit sphere.

    Old vertices keep their indices; one new vertex is appended per undirected edge.
    Face (a, b, c) becomes (a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca), all with
    the parent's orientation.
    """
    num_faces = len(faces)
    halfedges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    unique, inverse = np.unique(np.sort(halfedges, axis=1), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    mid = verts[unique[:, 0]] + verts[unique[:, 1]]
    mid /= np.linalg.norm(mid, axis=-1, keepdims=True)
    new_verts = np.concatenate([verts, mid])
    offset = len(verts)
    ab = offset + inverse[:num_faces]
    bc = offset + inverse[num_faces : 2 * num_faces]
    ca = offset + inverse[2 * num_faces :]
    a, b, c = faces.T
    new_faces = np.concatenate(
        [
            np.stack([a, ab, ca], axis=1),
            np.stack([b, bc, ab], axis=1),
            np.stack([c, ca, bc], axis=1),
            np.stack([ab, bc, ca], axis=1),
        ]
    )
    return new_verts, new_faces


def _check_refinements(refinements: int) -> int:
    if isinstance(refinements, bool) or not isinstance(refinements, (int, np.integer)):
        raise DiffsciError(f"refinements: expected an integer, got {refinements!r}")
    if not 0 <= int(refinements) <= _MAX_REFINEMENTS:
        raise DiffsciError(
            f"refinements: expected 0..{_MAX_REFINEMENTS}, got {refinements} "
            f"({10 * 4 ** int(refinements) + 2 if refinements >= 0 else '?'} mesh nodes)"
        )
    return int(refinements)


def icosahedral_mesh_levels(refinements: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Vertices of the finest mesh and the faces of every level 0..refinements.

    Returns
    -------
    vertices : np.ndarray
        Shape (V, 3) float64 unit vectors, ``V = 10 * 4**refinements + 2``; the first
        ``10 * 4**l + 2`` of them are the vertices of level ``l``.
    faces : list of np.ndarray
        ``faces[l]`` Shape (20 * 4**l, 3) int64, counter-clockwise seen from outside.
    """
    refinements = _check_refinements(refinements)
    verts, faces = _base_icosahedron()
    levels = [faces]
    for _ in range(refinements):
        verts, faces = _subdivide(verts, faces)
        levels.append(faces)
    return verts, levels


def icosahedral_mesh(refinements: int) -> tuple[np.ndarray, np.ndarray]:
    """The icosahedral mesh refined ``refinements`` times.

    Returns
    -------
    vertices : np.ndarray
        Shape (10 * 4**k + 2, 3) float64 unit vectors.
    faces : np.ndarray
        Shape (20 * 4**k, 3) int64 vertex indices, counter-clockwise seen from outside.
    """
    verts, levels = icosahedral_mesh_levels(refinements)
    return verts, levels[-1]


def mesh_edges(faces: np.ndarray) -> np.ndarray:
    """Bidirectional edges of a triangle mesh, sorted by (sender, receiver).

    Parameters
    ----------
    faces : np.ndarray
        Shape (F, 3) vertex indices.

    Returns
    -------
    np.ndarray
        Shape (2, 2 * E) int64; each undirected edge appears once in each direction.
    """
    faces = np.asarray(faces, dtype=np.int64)
    pairs = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    pairs = np.concatenate([pairs, pairs[:, ::-1]])
    return np.unique(pairs, axis=0).T.copy()


def multimesh_edges(face_levels: list[np.ndarray]) -> np.ndarray:
    """Union of the bidirectional edges of every level (GraphCast multi-mesh).

    Returns Shape (2, E) int64, sorted by (sender, receiver).
    """
    edges = np.concatenate([mesh_edges(f) for f in face_levels], axis=1)
    return np.unique(edges.T, axis=0).T.copy()


# --------------------------------------------------------------------------------------
# Point location
# --------------------------------------------------------------------------------------


def _cone_weights(points: np.ndarray, inv_mats: np.ndarray) -> np.ndarray:
    """Weights w with ``p = w_0 a + w_1 b + w_2 c`` for each (point, face) pair.

    ``inv_mats`` Shape (..., 3, 3) inverses of ``[a b c]`` (vertices as columns), points
    Shape (..., 3); returns Shape (..., 3).
    """
    return np.einsum("...ij,...j->...i", inv_mats, points)


def _score(w: np.ndarray) -> np.ndarray:
    """min of the normalised barycentric coordinates; -inf when the point is on the far side."""
    total = w.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = w.min(axis=-1) / total
    return np.where(total > 0, score, -np.inf)


def containing_triangles(
    points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, *, num_candidates: int = 12
) -> tuple[np.ndarray, np.ndarray]:
    """The spherical triangle holding each point, and the point's barycentric coordinates.

    A point p lies in the spherical triangle (a, b, c) iff it lies in the cone spanned by
    a, b, c, i.e. ``p = w_0 a + w_1 b + w_2 c`` with all ``w >= 0``. The barycentric
    coordinates are ``w / sum(w)`` (those of the central projection of p onto the flat
    triangle). Among candidate faces (nearest face centres, then all faces for any point
    left over) the face with the largest smallest coordinate wins, so a point on an edge
    or at a vertex gets one of its incident faces deterministically.

    Parameters
    ----------
    points : np.ndarray
        Shape (P, 3) unit vectors.
    vertices : np.ndarray
        Shape (V, 3) unit vectors.
    faces : np.ndarray
        Shape (F, 3) vertex indices.

    Returns
    -------
    face_index : np.ndarray
        Shape (P,) int64.
    barycentric : np.ndarray
        Shape (P, 3) float64, each row summing to 1, all entries >= -1e-9.
    """
    points = np.asarray(points, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    mats = np.stack([vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]], axis=-1)
    inv_mats = np.linalg.inv(mats)  # (F, 3, 3)
    centres = mats.sum(axis=-1)
    centres /= np.linalg.norm(centres, axis=-1, keepdims=True)
    k = min(num_candidates, len(faces))
    _, cand = cKDTree(centres).query(points, k=k)
    cand = np.asarray(cand, dtype=np.int64).reshape(len(points), k)
    w = _cone_weights(points[:, None, :], inv_mats[cand])  # (P, k, 3)
    score = _score(w)
    best = score.argmax(axis=1)
    face_index = cand[np.arange(len(points)), best]
    best_w = w[np.arange(len(points)), best]
    left = np.nonzero(score[np.arange(len(points)), best] < -1e-12)[0]
    for p in left:  # rare: the true face was not among the nearest centres
        w_all = _cone_weights(points[p][None, :], inv_mats)
        f = int(_score(w_all).argmax())
        face_index[p] = f
        best_w[p] = w_all[f]
    bary = best_w / best_w.sum(axis=-1, keepdims=True)
    return face_index, bary


# --------------------------------------------------------------------------------------
# Grid checks
# --------------------------------------------------------------------------------------


def _as_1d(name: str, values: object) -> np.ndarray:
    arr = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values)
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise DiffsciError(f"{name}: expected numbers in degrees ({exc})") from exc
    if arr.ndim != 1 or arr.size == 0:
        raise DiffsciError(f"{name}: expected a non-empty 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise DiffsciError(f"{name}: contains NaN or infinite values")
    return arr


def _check_grid(latitude: object, longitude: object) -> tuple[np.ndarray, np.ndarray]:
    lat = _as_1d("latitude", latitude)
    lon = _as_1d("longitude", longitude)
    if lat.min() < -90.0 or lat.max() > 90.0:
        raise DiffsciError(f"latitude: values must lie in [-90, 90], got {lat.min()}..{lat.max()}")
    if lat.size > 1 and not (np.all(np.diff(lat) > 0) or np.all(np.diff(lat) < 0)):
        raise DiffsciError("latitude: must be strictly monotonic (ascending -90..90 expected)")
    if lon.min() < -180.0 or lon.max() > 360.0:
        raise DiffsciError(f"longitude: values must lie in [-180, 360], got {lon.min()}..{lon.max()}")
    if lon.size > 1 and not np.all(np.diff(lon) > 0):
        raise DiffsciError("longitude: must be strictly increasing (0..360 expected)")
    wrapped = np.mod(lon, 360.0)
    if np.unique(np.round(wrapped, 9)).size != lon.size:
        raise DiffsciError("longitude: two values are the same meridian (e.g. 0 and 360)")
    return lat, lon


def is_global_grid(latitude: np.ndarray, longitude: np.ndarray) -> bool:
    """Whether a lat/lon grid covers the whole sphere.

    Global in longitude: the largest circular gap between consecutive meridians is at
    most 1.5 times the median gap. Global in latitude: the gap from the first and last
    latitude to the nearer pole is at most the latitude spacing (e.g. -87.1875 with a
    5.625 spacing, or -90).
    """
    lat, lon = _check_grid(latitude, longitude)
    if lat.size < 2 or lon.size < 3:
        return False
    wrapped = np.sort(np.mod(lon, 360.0))
    gaps = np.diff(np.concatenate([wrapped, wrapped[:1] + 360.0]))
    lon_global = gaps.max() <= 1.5 * np.median(gaps) + 1e-9
    lat_sorted = np.sort(lat)
    spacing = np.diff(lat_sorted)
    tol = 1e-6
    lat_global = (lat_sorted[0] + 90.0 <= spacing[0] + tol) and (90.0 - lat_sorted[-1] <= spacing[-1] + tol)
    return bool(lon_global and lat_global)


# --------------------------------------------------------------------------------------
# Graph
# --------------------------------------------------------------------------------------


def _inside_domain(xyz: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Whether each unit vector lies in the union of the grid's cells. Shape (P, 3) -> (P,) bool."""
    from diffsci.weather.grid import latitude_bounds, longitude_bounds

    lb, wb = latitude_bounds(lat), longitude_bounds(lon)
    p_lat, p_lon = xyz_to_latlon(xyz)
    inside = (p_lat >= lb.min() - 1e-9) & (p_lat <= lb.max() + 1e-9)
    west, east = wb.min(), wb.max()
    if east - west < 360.0 - 1e-9:
        inside &= np.mod(p_lon - west, 360.0) <= (east - west) + 1e-9
    return inside


def _radius_pairs(grid_xyz: np.ndarray, mesh_xyz: np.ndarray, radius: float) -> np.ndarray:
    """All (grid, mesh) pairs with chord distance <= radius, Shape (2, E), sorted by mesh."""
    tree = cKDTree(grid_xyz)
    hits = tree.query_ball_point(mesh_xyz, r=radius)
    counts = np.fromiter((len(h) for h in hits), dtype=np.int64, count=len(hits))
    mesh_idx = np.repeat(np.arange(len(mesh_xyz), dtype=np.int64), counts)
    grid_idx = np.fromiter((g for h in hits for g in sorted(h)), dtype=np.int64, count=int(counts.sum()))
    return np.stack([grid_idx, mesh_idx])


def build_graph(
    latitude: object,
    longitude: object,
    *,
    refinements: int = 3,
    multimesh: bool = False,
    g2m_radius_factor: float = 0.6,
    regional: bool | None = None,
) -> GridMeshGraph:
    """Build the grid -> icosahedral mesh -> grid graph for a lat/lon grid.

    Parameters
    ----------
    latitude : array-like
        Shape (H,) degrees, strictly monotonic (ascending -90..90 expected).
    longitude : array-like
        Shape (W,) degrees, strictly increasing (0..360 expected).
    refinements : int
        Number of 1-to-4 splits of the icosahedron (mesh nodes ``10 * 4**k + 2``).
    multimesh : bool
        False (GenCast): edges of the finest mesh only. True (GraphCast): union of the
        edges of every level 0..k on the finest vertices.
    g2m_radius_factor : float
        Grid-to-mesh radius as a fraction of the longest finest-mesh edge (chord).
    regional : bool, optional
        Keep only the mesh nodes inside the grid's domain (limited-area grids; see the module
        docstring). ``None`` decides with :func:`is_global_grid`.

    Returns
    -------
    GridMeshGraph
        float32 features and positions, int64 indices, on the CPU.
    """
    lat, lon = _check_grid(latitude, longitude)
    refinements = _check_refinements(refinements)
    if not (np.isfinite(g2m_radius_factor) and g2m_radius_factor > 0):
        raise DiffsciError(f"g2m_radius_factor: expected a positive number, got {g2m_radius_factor!r}")
    if regional is None:
        regional = not is_global_grid(lat, lon)

    lat_grid, lon_grid = np.meshgrid(lat, lon, indexing="ij")
    grid_latlon = np.stack([lat_grid.reshape(-1), lon_grid.reshape(-1)], axis=-1)  # (G, 2)
    grid_xyz = latlon_to_xyz(grid_latlon[:, 0], grid_latlon[:, 1])

    verts, face_levels = icosahedral_mesh_levels(refinements)
    faces = face_levels[-1]
    finest_edges = mesh_edges(faces)
    max_edge = float(np.linalg.norm(verts[finest_edges[0]] - verts[finest_edges[1]], axis=-1).max())
    radius = g2m_radius_factor * max_edge
    m_edges = multimesh_edges(face_levels) if multimesh else finest_edges

    # Grid -> mesh by radius, mesh -> grid by containing triangle.
    g2m = _radius_pairs(grid_xyz, verts, radius)
    face_of_grid, _ = containing_triangles(grid_xyz, verts, faces)
    tri = faces[face_of_grid]  # (G, 3)

    num_verts = len(verts)
    keep = _inside_domain(verts, lat, lon) if regional else np.ones(num_verts, dtype=bool)
    if keep.sum() < 3:
        raise DiffsciError(
            f"regional grid {lat.min():g}..{lat.max():g}N, {lon.min():g}..{lon.max():g}E holds {int(keep.sum())} "
            f"mesh node(s) of refinement {refinements}; use more refinements (a finer mesh) for so small a domain"
        )
    g2m = g2m[:, keep[g2m[1]]]
    has_g2m = np.zeros(num_verts, dtype=bool)
    has_g2m[g2m[1]] = True

    # Every kept node without a radius edge hears from its nearest grid point.
    orphans = np.nonzero(keep & ~has_g2m)[0]
    if orphans.size:
        _, nearest = cKDTree(grid_xyz).query(verts[orphans], k=1)
        extra = np.stack([np.asarray(nearest, dtype=np.int64), orphans])
        g2m = np.concatenate([g2m, extra], axis=1)
        order = np.lexsort((g2m[0], g2m[1]))
        g2m = g2m[:, order]

    new_index = np.full(num_verts, -1, dtype=np.int64)
    new_index[keep] = np.arange(int(keep.sum()))
    mesh_xyz = verts[keep]
    both = keep[m_edges[0]] & keep[m_edges[1]]
    m_edges = new_index[m_edges[:, both]]
    g2m = np.stack([g2m[0], new_index[g2m[1]]])
    num_grid = len(grid_xyz)
    senders = new_index[tri]  # (G, 3)
    cut = (senders < 0).any(axis=1)  # containing triangle lost a vertex (near the domain edge)
    if cut.any():
        _, near = cKDTree(mesh_xyz).query(grid_xyz[cut], k=3)
        senders[cut] = np.sort(np.asarray(near, dtype=np.int64), axis=1)
    m2g = np.stack([senders.reshape(-1), np.repeat(np.arange(num_grid, dtype=np.int64), 3)])
    if (m2g[0] < 0).any() or (g2m[1] < 0).any():  # by construction impossible
        raise RuntimeError("graph build: an edge points at a dropped mesh node")

    mesh_lat, mesh_lon = xyz_to_latlon(mesh_xyz)
    mesh_latlon = np.stack([mesh_lat, mesh_lon], axis=-1)

    mesh_attr = relative_edge_features(mesh_xyz, mesh_latlon, m_edges[0], m_edges[1])
    g2m_attr = relative_edge_features(grid_xyz, mesh_latlon, g2m[0], g2m[1])
    m2g_attr = relative_edge_features(mesh_xyz, grid_latlon, m2g[0], m2g[1])

    f32 = functools.partial(torch.as_tensor, dtype=torch.float32)
    i64 = functools.partial(torch.as_tensor, dtype=torch.int64)
    return GridMeshGraph(
        grid_latlon=f32(grid_latlon),
        mesh_pos=f32(mesh_xyz),
        mesh_edge_index=i64(m_edges),
        mesh_edge_attr=f32(mesh_attr),
        g2m_edge_index=i64(g2m),
        g2m_edge_attr=f32(g2m_attr),
        m2g_edge_index=i64(m2g),
        m2g_edge_attr=f32(m2g_attr),
        grid_node_attr=f32(node_features(grid_latlon[:, 0], grid_latlon[:, 1])),
        mesh_node_attr=f32(node_features(mesh_lat, mesh_lon)),
    )


# --------------------------------------------------------------------------------------
# Caching
# --------------------------------------------------------------------------------------


def _cache_key(lat: tuple[float, ...], lon: tuple[float, ...], options: tuple) -> str:
    blob = json.dumps(
        {"v": _GRAPH_FORMAT_VERSION, "lat": lat, "lon": lon, "options": [list(o) for o in options]},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _load_cached(path: Path) -> GridMeshGraph | None:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        return GridMeshGraph(**{f.name: data[f.name] for f in dataclasses.fields(GridMeshGraph)})
    except Exception as exc:  # a corrupt or stale cache file is rebuilt, not fatal
        warnings.warn(f"graph cache {path}: unreadable ({exc}); rebuilding it", stacklevel=3)
        return None


def _save_cached(graph: GridMeshGraph, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(graph.tensors(), tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@functools.lru_cache(maxsize=16)
def _cached_graph(
    lat: tuple[float, ...], lon: tuple[float, ...], options: tuple, cache_dir: str | None
) -> GridMeshGraph:
    kwargs = dict(options)
    if cache_dir is None:
        return build_graph(np.array(lat), np.array(lon), **kwargs)
    path = Path(cache_dir) / f"graph_{_cache_key(lat, lon, options)}.pt"
    if path.exists():
        graph = _load_cached(path)
        if graph is not None:
            return graph
    graph = build_graph(np.array(lat), np.array(lon), **kwargs)
    _save_cached(graph, path)
    return graph


def cached_graph(
    latitude: object,
    longitude: object,
    *,
    cache_dir: str | os.PathLike | None = None,
    **kwargs: object,
) -> GridMeshGraph:
    """:func:`build_graph`, built once per (grid, options) and process.

    The result is memoised in memory (``functools.lru_cache``), so equal arguments return
    the very same object. With ``cache_dir`` the graph is also stored on disk as
    ``graph_<hash>.pt`` (written atomically) and read from there by later processes;
    nothing is written to disk without ``cache_dir``.

    Parameters
    ----------
    latitude, longitude : array-like
        Shape (H,) and (W,) degrees, as for :func:`build_graph`.
    cache_dir : path, optional
        Folder for the on-disk cache.
    **kwargs
        Options of :func:`build_graph`.
    """
    lat, lon = _check_grid(latitude, longitude)
    allowed = {"refinements", "multimesh", "g2m_radius_factor", "regional"}
    unknown = set(kwargs) - allowed
    if unknown:
        raise DiffsciError(f"cached_graph: unknown option(s) {sorted(unknown)}; expected {sorted(allowed)}")
    defaults = {"refinements": 3, "multimesh": False, "g2m_radius_factor": 0.6, "regional": None}
    options = tuple(sorted({**defaults, **kwargs}.items()))
    key_dir = None if cache_dir is None else str(Path(cache_dir).resolve())
    return _cached_graph(tuple(lat.tolist()), tuple(lon.tolist()), options, key_dir)


cached_graph.cache_clear = _cached_graph.cache_clear  # type: ignore[attr-defined]
cached_graph.cache_info = _cached_graph.cache_info  # type: ignore[attr-defined]
