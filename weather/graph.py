"""Grid -> icosahedral mesh -> grid graph (GraphCast / GenCast style).

Dimension letters: G grid points (H * W), M mesh nodes, V mesh vertices of the full
sphere, E edges.

Positions, the icosahedron, chord distances and the local-frame edge and node features follow
the conventions of :mod:`diffsci.weather.mesh`. Here:

- **Grid -> mesh** edges join every grid point to the mesh nodes within a radius of
  ``g2m_radius_factor`` (0.6, GenCast) times the longest chord of the finest mesh's edges.
- **Mesh -> grid** edges join every grid point to the three vertices of the mesh triangle
  holding it.
- **Edge features** are normalised by the longest edge of each edge set separately (mesh,
  grid-to-mesh, mesh-to-grid).

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
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from diffsci.core.errors import DiffsciError
from diffsci.core.io import check_range, write_torch
from diffsci.weather.grid import latitude_bounds, longitude_bounds
from diffsci.weather.mesh import (containing_triangles, icosahedral_mesh_levels, latlon_to_xyz, mesh_edges,
                                  multimesh_edges, node_features, relative_edge_features, xyz_to_latlon)

__all__ = [
    "GridMeshGraph",
    "is_global_grid",
    "build_graph",
    "cached_graph",
]

_GRAPH_FORMAT_VERSION = 2  # part of the cache key: bump it when what is stored or how it is built changes


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
        """G, the number of grid points."""
        return int(self.grid_latlon.shape[0])

    @property
    def num_mesh(self) -> int:
        """M, the number of mesh nodes."""
        return int(self.mesh_pos.shape[0])

    def to(self, device: torch.device | str) -> "GridMeshGraph":
        """Return a copy with every tensor on ``device`` (the graph itself is unchanged)."""
        return dataclasses.replace(
            self, **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)}
        )

    def tensors(self) -> dict[str, Tensor]:
        """All fields as a plain dict of tensors (what the on-disk cache stores)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


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
    g2m_radius_factor = check_range(g2m_radius_factor, "g2m_radius_factor", 0.0, None, lo_open=True)
    if regional is None:
        regional = not is_global_grid(lat, lon)

    lat_grid, lon_grid = np.meshgrid(lat, lon, indexing="ij")
    grid_latlon = np.stack([lat_grid.reshape(-1), lon_grid.reshape(-1)], axis=-1)  # (G, 2)
    grid_xyz = latlon_to_xyz(grid_latlon[:, 0], grid_latlon[:, 1])

    verts, face_levels = icosahedral_mesh_levels(refinements)
    faces = face_levels[-1]
    finest_edges = mesh_edges(faces)
    max_edge = float(np.linalg.norm(verts[finest_edges[0]] - verts[finest_edges[1]], axis=-1).max())
    m_edges = multimesh_edges(face_levels) if multimesh else finest_edges

    keep = _kept_mesh_nodes(verts, lat, lon, regional, refinements)
    g2m = _grid_to_mesh(grid_xyz, verts, g2m_radius_factor * max_edge, keep)
    face_of_grid, _ = containing_triangles(grid_xyz, verts, faces)  # mesh -> grid by containing triangle

    new_index = np.full(len(verts), -1, dtype=np.int64)  # old mesh node -> kept node (-1: dropped)
    new_index[keep] = np.arange(int(keep.sum()))
    mesh_xyz = verts[keep]
    both = keep[m_edges[0]] & keep[m_edges[1]]
    m_edges = new_index[m_edges[:, both]]
    g2m = np.stack([g2m[0], new_index[g2m[1]]])
    m2g = _mesh_to_grid(new_index[faces[face_of_grid]], grid_xyz, mesh_xyz)
    if (m2g[0] < 0).any() or (g2m[1] < 0).any():  # by construction impossible
        raise RuntimeError("graph build: an edge points at a dropped mesh node")
    return _graph_tensors(grid_latlon, grid_xyz, mesh_xyz, m_edges, g2m, m2g)


def _kept_mesh_nodes(verts: np.ndarray, lat: np.ndarray, lon: np.ndarray, regional: bool,
                     refinements: int) -> np.ndarray:
    """The mesh nodes a grid uses: all on a global grid, those inside the domain on a regional
    one (at least 3). Shape (N,) bool."""
    keep = _inside_domain(verts, lat, lon) if regional else np.ones(len(verts), dtype=bool)
    if keep.sum() < 3:
        raise DiffsciError(
            f"regional grid {lat.min():g}..{lat.max():g}N, {lon.min():g}..{lon.max():g}E holds {int(keep.sum())} "
            f"mesh node(s) of refinement {refinements}; use more refinements (a finer mesh) for so small a domain"
        )
    return keep


def _grid_to_mesh(grid_xyz: np.ndarray, verts: np.ndarray, radius: float, keep: np.ndarray) -> np.ndarray:
    """Grid -> mesh edges (grid index, mesh index in ``verts``), Shape (2, E), sorted by mesh
    node: every grid point within ``radius`` (chord) of a kept node, and for a kept node with
    none its nearest grid point."""
    g2m = _radius_pairs(grid_xyz, verts, radius)
    g2m = g2m[:, keep[g2m[1]]]
    has_g2m = np.zeros(len(verts), dtype=bool)
    has_g2m[g2m[1]] = True
    orphans = np.nonzero(keep & ~has_g2m)[0]
    if orphans.size:
        _, nearest = cKDTree(grid_xyz).query(verts[orphans], k=1)
        extra = np.stack([np.asarray(nearest, dtype=np.int64), orphans])
        g2m = np.concatenate([g2m, extra], axis=1)
        order = np.lexsort((g2m[0], g2m[1]))
        g2m = g2m[:, order]
    return g2m


def _mesh_to_grid(senders: np.ndarray, grid_xyz: np.ndarray, mesh_xyz: np.ndarray) -> np.ndarray:
    """Mesh -> grid edges, Shape (2, 3 G): each grid point hears from the 3 (kept) vertices of its
    containing triangle, ``senders`` Shape (G, 3) (-1 where a vertex was dropped near a regional
    domain's edge: then from its 3 nearest kept nodes)."""
    senders = senders.copy()
    cut = (senders < 0).any(axis=1)
    if cut.any():
        _, near = cKDTree(mesh_xyz).query(grid_xyz[cut], k=3)
        senders[cut] = np.sort(np.asarray(near, dtype=np.int64), axis=1)
    return np.stack([senders.reshape(-1), np.repeat(np.arange(len(grid_xyz), dtype=np.int64), 3)])


def _graph_tensors(grid_latlon: np.ndarray, grid_xyz: np.ndarray, mesh_xyz: np.ndarray, m_edges: np.ndarray,
                   g2m: np.ndarray, m2g: np.ndarray) -> GridMeshGraph:
    """Edge and node features of the graph, as float32 / int64 CPU tensors."""
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
    write_torch(path, graph.tensors())
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
