"""Icosahedral meshes on the unit sphere and the geometry of graph nodes and edges.

Dimension letters: V mesh vertices, F mesh faces, E edges, N nodes, P query points.

Conventions (all stated once here, and relied on by :mod:`diffsci.weather.graph` and the tests):

- **Positions** are unit vectors ``x = cos(lat) cos(lon)``, ``y = cos(lat) sin(lon)``,
  ``z = sin(lat)`` (degrees in, radians inside).
- **Icosahedron orientation** follows GraphCast: one face is centred on each pole, so the
  mesh has a 3-fold symmetry about the z axis and no mesh vertex ever lies on a pole (the
  face centre is never a midpoint-refinement vertex). Refinement splits every triangle
  into 4 through the (re-normalised) edge midpoints; the vertices of level ``l`` are the
  first ``10 * 4**l + 2`` vertices of every finer level, so the multi-mesh is a union of
  edge sets on the finest vertices.
- **Distances** are chord lengths (Euclidean distance in R^3 between unit vectors), as in
  GraphCast / GenCast.
- **Edge features** ``[|d|, d_x, d_y, d_z] / max|d|`` (4 per edge) with
  ``d = R_r (x_s - x_r)``: ``R_r = R_y(lat_r) R_z(-lon_r)`` rotates the receiver to
  latitude 0, longitude 0, i.e. to ``(1, 0, 0)``; in that frame ``+y`` points east and
  ``+z`` points north of the receiver. ``max|d|`` is the longest edge of that edge set.
  The features are invariant under any rotation of the sphere about the z axis.
- **Node features** ``[cos lat, sin lon, cos lon]`` (structural only).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from diffsci.core.io import check_int

__all__ = [
    "MAX_REFINEMENTS",
    "latlon_to_xyz",
    "xyz_to_latlon",
    "local_frame_rotations",
    "relative_edge_features",
    "node_features",
    "icosahedral_mesh",
    "icosahedral_mesh_levels",
    "mesh_edges",
    "multimesh_edges",
    "containing_triangles",
]

#: the finest mesh offered: 10 * 4**7 + 2 = 163842 nodes
MAX_REFINEMENTS = 7


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


def icosahedral_mesh_levels(refinements: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Vertices of the finest mesh and the faces of every level 0..refinements.

    Parameters
    ----------
    refinements : int
        1-to-4 splits of the icosahedron, 0..``MAX_REFINEMENTS``.

    Returns
    -------
    vertices : np.ndarray
        Shape (V, 3) float64 unit vectors, ``V = 10 * 4**refinements + 2``; the first
        ``10 * 4**l + 2`` of them are the vertices of level ``l``.
    faces : list of np.ndarray
        ``faces[l]`` Shape (20 * 4**l, 3) int64, counter-clockwise seen from outside.
    """
    refinements = check_int(refinements, "refinements", minimum=0, maximum=MAX_REFINEMENTS)
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

