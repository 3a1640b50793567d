"""Tests for diffsci.weather.mesh and diffsci.weather.graph: mesh counts, connectivity rules, local-frame features,
regional pruning and caching. References are analytic (counts, Euler characteristic),
independent implementations (brute-force cdist radius query, triple-product point-in-
triangle test) or invariants (rotation about the z axis)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from diffsci.core.errors import DiffsciError
from diffsci.weather.graph import GridMeshGraph, build_graph, cached_graph, is_global_grid
from diffsci.weather.mesh import (
    containing_triangles,
    icosahedral_mesh,
    icosahedral_mesh_levels,
    latlon_to_xyz,
    local_frame_rotations,
    mesh_edges,
    multimesh_edges,
    relative_edge_features,
    xyz_to_latlon,
)

# WeatherBench 2 5.625 degree grid (32 x 64), the default size.
LAT32 = np.linspace(-87.1875, 87.1875, 32)
LON64 = np.arange(64) * 5.625


@pytest.fixture(scope="module")
def default_graph() -> GridMeshGraph:
    return build_graph(LAT32, LON64)


def _grid_xyz(graph: GridMeshGraph) -> np.ndarray:
    ll = graph.grid_latlon.double().numpy()
    return latlon_to_xyz(ll[:, 0], ll[:, 1])


# ---------------------------------------------------------------------------- mesh


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4])
def test_mesh_counts_and_euler(k: int) -> None:
    verts, faces = icosahedral_mesh(k)
    edges = mesh_edges(faces)
    num_v, num_f, num_e = len(verts), len(faces), edges.shape[1] // 2
    assert num_v == 10 * 4**k + 2
    assert num_f == 20 * 4**k
    assert num_e == 30 * 4**k
    assert num_v - num_e + num_f == 2
    np.testing.assert_allclose(np.linalg.norm(verts, axis=1), 1.0, atol=1e-12)
    # Every vertex used; 12 of degree 5, the rest degree 6.
    degree = np.bincount(edges[1], minlength=num_v)
    assert (degree == 5).sum() == 12 and (degree == 6).sum() == num_v - 12
    # Faces are counter-clockwise seen from outside.
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    assert (np.einsum("ij,ij->i", np.cross(b - a, c - a), a + b + c) > 0).all()
    # A face centred on each pole: no vertex at a pole, 3-fold symmetric about z.
    assert np.abs(verts[:, 2]).max() < 1 - 1e-6
    rot = np.array([[-0.5, -np.sqrt(3) / 2, 0], [np.sqrt(3) / 2, -0.5, 0], [0, 0, 1]])
    dist, _ = cKDTree(verts).query(verts @ rot.T)
    assert dist.max() < 1e-9


def test_mesh_edges_bidirectional_without_self_loops() -> None:
    _, faces = icosahedral_mesh(2)
    edges = mesh_edges(faces)
    pairs = set(map(tuple, edges.T.tolist()))
    assert all((r, s) in pairs for s, r in pairs)
    assert (edges[0] != edges[1]).all()
    assert len(pairs) == edges.shape[1]


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4])
def test_multimesh_edge_count_is_sum_over_levels(k: int) -> None:
    verts, levels = icosahedral_mesh_levels(k)
    for level, faces in enumerate(levels):  # levels are nested on the finest vertices
        assert faces.max() == 10 * 4**level + 1
    edges = multimesh_edges(levels)
    assert edges.shape[1] == 2 * sum(30 * 4**level for level in range(k + 1))
    assert len(set(map(tuple, edges.T.tolist()))) == edges.shape[1]


def test_build_graph_multimesh_option() -> None:
    single = build_graph(LAT32, LON64, refinements=2)
    multi = build_graph(LAT32, LON64, refinements=2, multimesh=True)
    assert single.mesh_edge_index.shape[1] == 2 * 480
    assert multi.mesh_edge_index.shape[1] == 2 * (30 + 120 + 480)
    assert torch.equal(single.g2m_edge_index, multi.g2m_edge_index)


# ---------------------------------------------------------------------------- grid <-> mesh


def test_grid_order_matches_field_reshape(default_graph: GridMeshGraph) -> None:
    ll = default_graph.grid_latlon.reshape(32, 64, 2).double().numpy()
    np.testing.assert_allclose(ll[:, 0, 0], LAT32, atol=1e-5)
    np.testing.assert_allclose(ll[0, :, 1], LON64, atol=1e-5)
    assert default_graph.num_grid == 32 * 64 and default_graph.num_mesh == 642


def test_m2g_three_edges_from_containing_triangle(default_graph: GridMeshGraph) -> None:
    g = default_graph
    senders, receivers = g.m2g_edge_index.numpy()
    counts = np.bincount(receivers, minlength=g.num_grid)
    assert (counts == 3).all()
    order = np.argsort(receivers, kind="stable")
    tri = senders[order].reshape(-1, 3)
    assert (tri[:, 0] != tri[:, 1]).all() and (tri[:, 1] != tri[:, 2]).all() and (tri[:, 0] != tri[:, 2]).all()
    pos = g.mesh_pos.double().numpy()
    p = _grid_xyz(g)
    a, b, c = pos[tri[:, 0]], pos[tri[:, 1]], pos[tri[:, 2]]
    # Barycentric (cone) coordinates by a direct solve: all >= -eps.
    w = np.linalg.solve(np.stack([a, b, c], axis=-1), p[..., None])[..., 0]
    assert (w.sum(1) > 0).all()
    assert (w / w.sum(1, keepdims=True)).min() >= -1e-5
    # Independent test: the point is on the inner side of all three great circles.
    sides = np.stack(
        [np.einsum("ij,ij->i", np.cross(a, b), p), np.einsum("ij,ij->i", np.cross(b, c), p),
         np.einsum("ij,ij->i", np.cross(c, a), p)], axis=1
    )
    assert ((sides >= -1e-6).all(1) | (sides <= 1e-6).all(1)).all()
    # The three vertices form a face of the mesh.
    _, faces = icosahedral_mesh(3)
    face_set = {tuple(sorted(f)) for f in faces.tolist()}
    assert all(tuple(sorted(t)) in face_set for t in tri.tolist())


def test_containing_triangles_on_vertices_and_edges() -> None:
    verts, faces = icosahedral_mesh(2)
    edges = mesh_edges(faces)
    mid = verts[edges[0]] + verts[edges[1]]
    mid /= np.linalg.norm(mid, axis=1, keepdims=True)
    points = np.concatenate([verts, mid])
    face_index, bary = containing_triangles(points, verts, faces)
    assert bary.min() >= -1e-9
    np.testing.assert_allclose(bary.sum(1), 1.0, atol=1e-12)
    chosen = faces[face_index]
    assert all(v in row for v, row in zip(range(len(verts)), chosen[: len(verts)].tolist()))
    for (s, r), row in zip(edges.T.tolist(), chosen[len(verts):].tolist()):
        assert s in row and r in row
    # Reconstruct the points from the barycentric coordinates (up to normalisation).
    recon = np.einsum("pk,pkd->pd", bary, verts[chosen])
    recon /= np.linalg.norm(recon, axis=1, keepdims=True)
    np.testing.assert_allclose(recon, points, atol=1e-9)


def test_g2m_matches_brute_force_radius(default_graph: GridMeshGraph) -> None:
    g = default_graph
    verts, faces = icosahedral_mesh(3)
    e = mesh_edges(faces)
    radius = 0.6 * np.linalg.norm(verts[e[0]] - verts[e[1]], axis=1).max()  # chord
    dist = torch.cdist(torch.from_numpy(_grid_xyz(g)), torch.from_numpy(verts)).numpy()
    expected = set(zip(*np.nonzero(dist <= radius)))
    got = set(map(tuple, g.g2m_edge_index.T.tolist()))
    borderline = set(zip(*np.nonzero(np.abs(dist - radius) < 1e-9)))
    assert expected ^ got <= borderline
    # Every mesh node receives at least one grid -> mesh edge (from the radius alone).
    assert (np.bincount(g.g2m_edge_index[1].numpy(), minlength=g.num_mesh) >= 1).all()
    np.testing.assert_allclose(g.mesh_pos.double().numpy(), verts, atol=1e-6)


def test_fine_mesh_on_coarse_grid_still_feeds_every_node() -> None:
    g = build_graph(LAT32, LON64, refinements=4)  # radius ~2.8 deg < half grid diagonal
    assert g.num_mesh == 2562
    assert (np.bincount(g.g2m_edge_index[1].numpy(), minlength=g.num_mesh) >= 1).all()


def test_mesh_edges_bidirectional_in_graph(default_graph: GridMeshGraph) -> None:
    pairs = set(map(tuple, default_graph.mesh_edge_index.T.tolist()))
    assert all((r, s) in pairs for s, r in pairs)
    assert default_graph.mesh_edge_index.shape[1] == 2 * 1920


def test_feature_shapes_and_normalisation(default_graph: GridMeshGraph) -> None:
    g = default_graph
    for idx, attr in ((g.mesh_edge_index, g.mesh_edge_attr), (g.g2m_edge_index, g.g2m_edge_attr),
                      (g.m2g_edge_index, g.m2g_edge_attr)):
        assert attr.shape == (idx.shape[1], 4) and attr.dtype == torch.float32
        assert idx.dtype == torch.int64
        assert attr[:, 0].max().item() == pytest.approx(1.0, abs=1e-6)
        assert attr.abs().max().item() <= 1 + 1e-6
        torch.testing.assert_close(attr[:, 1:].norm(dim=1), attr[:, 0], atol=1e-6, rtol=0)
    assert g.grid_node_attr.shape == (g.num_grid, 3) and g.mesh_node_attr.shape == (g.num_mesh, 3)
    lat = np.deg2rad(g.grid_latlon[:, 0].double().numpy())
    np.testing.assert_allclose(g.grid_node_attr[:, 0].numpy(), np.cos(lat), atol=1e-6)


# ---------------------------------------------------------------------------- local frame


def test_local_frame_sends_receiver_to_reference_and_keeps_east_north() -> None:
    rng = np.random.default_rng(0)
    lat = rng.uniform(-89, 89, 50)
    lon = rng.uniform(0, 360, 50)
    rot = local_frame_rotations(lat, lon)
    np.testing.assert_allclose(np.einsum("nij,njk->nik", rot, rot.transpose(0, 2, 1)), np.eye(3)[None].repeat(50, 0), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.einsum("nij,nj->ni", rot, latlon_to_xyz(lat, lon)), np.tile([1.0, 0, 0], (50, 1)), atol=1e-12)
    # Sender 1 degree north / east of the receiver.
    receivers = np.stack([lat, lon], axis=1)
    north = latlon_to_xyz(lat + 1.0, lon)
    east = latlon_to_xyz(lat, lon + 1.0)
    idx = np.arange(50)
    f_north = relative_edge_features(north, receivers, idx, idx, normaliser=1.0)
    f_east = relative_edge_features(east, receivers, idx, idx, normaliser=1.0)
    assert (f_north[:, 3] > 0).all() and np.abs(f_north[:, 2]).max() < 1e-12
    assert (f_east[:, 2] > 0).all()
    chord = np.linalg.norm(north - latlon_to_xyz(lat, lon), axis=1)
    np.testing.assert_allclose(f_north[:, 0], chord, atol=1e-12)
    # Receiver already at (lat 0, lon 0): the frame is the identity.
    sender = latlon_to_xyz(np.array([10.0]), np.array([20.0]))
    f = relative_edge_features(sender, np.array([[0.0, 0.0]]), [0], [0], normaliser=1.0)
    np.testing.assert_allclose(f[0, 1:], sender[0] - [1.0, 0, 0], atol=1e-12)


def test_edge_features_invariant_under_rotation_about_z() -> None:
    rng = np.random.default_rng(1)
    n_nodes, n_edges = 40, 200
    lat = rng.uniform(-80, 80, n_nodes)
    lon = rng.uniform(0, 360, n_nodes)
    s = rng.integers(0, n_nodes, n_edges)
    r = rng.integers(0, n_nodes, n_edges)
    base = relative_edge_features(latlon_to_xyz(lat, lon), np.stack([lat, lon], 1), s, r)
    for angle in (37.0, 120.0, 271.3):
        lon_rot = np.mod(lon + angle, 360.0)
        rot = relative_edge_features(latlon_to_xyz(lat, lon_rot), np.stack([lat, lon_rot], 1), s, r)
        np.testing.assert_allclose(rot, base, atol=1e-12)


def _edge_map_check(index: torch.Tensor, attr: torch.Tensor, perm_s: np.ndarray, perm_r: np.ndarray,
                    skip_receivers: set[int] = frozenset()) -> int:
    """Edges map onto edges under the node permutations, with equal features."""
    lookup = {pair: e for e, pair in enumerate(map(tuple, index.T.tolist()))}
    attr = attr.numpy()
    checked = 0
    for e, (s, r) in enumerate(index.T.tolist()):
        if r in skip_receivers:
            continue
        image = lookup.get((int(perm_s[s]), int(perm_r[r])))
        assert image is not None, f"edge {(s, r)} has no image"
        np.testing.assert_allclose(attr[image], attr[e], atol=2e-6)
        checked += 1
    return checked


def test_whole_graph_symmetric_under_120_degree_rotation() -> None:
    # Grid with the mesh's 3-fold symmetry about z: 7.5 deg spacing, 48 = 3 * 16 meridians,
    # offset by half a cell so that no grid point sits on a meridian mesh edge.
    lat = np.linspace(-86.25, 86.25, 24)
    lon = 3.75 + 7.5 * np.arange(48)
    g = build_graph(lat, lon, refinements=2)
    pos = g.mesh_pos.double().numpy()
    c, s = np.cos(2 * np.pi / 3), np.sin(2 * np.pi / 3)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    dist, mesh_perm = cKDTree(pos).query(pos @ rot.T)
    assert dist.max() < 1e-5
    assert np.unique(mesh_perm).size == g.num_mesh
    grid_perm = (np.arange(g.num_grid).reshape(24, 48) // 48 * 48
                 + (np.arange(48)[None, :] + 16) % 48).reshape(-1)
    np.testing.assert_allclose(
        g.grid_latlon[grid_perm, 1].numpy(), np.mod(g.grid_latlon[:, 1].numpy() + 120, 360), atol=1e-4
    )
    assert _edge_map_check(g.mesh_edge_index, g.mesh_edge_attr, mesh_perm, mesh_perm) == g.mesh_edge_index.shape[1]
    assert _edge_map_check(g.g2m_edge_index, g.g2m_edge_attr, grid_perm, mesh_perm) == g.g2m_edge_index.shape[1]
    # Mesh -> grid: a grid point lying (numerically) on a mesh edge may pick either face.
    verts, faces = icosahedral_mesh(2)
    _, bary = containing_triangles(_grid_xyz(g), verts, faces)
    on_edge = set(np.nonzero(bary.min(1) < 1e-7)[0].tolist())
    assert len(on_edge) < g.num_grid // 20
    checked = _edge_map_check(g.m2g_edge_index, g.m2g_edge_attr, mesh_perm, grid_perm, on_edge)
    assert checked == 3 * (g.num_grid - len(on_edge))


# ---------------------------------------------------------------------------- regional


def test_is_global_grid() -> None:
    assert is_global_grid(LAT32, LON64)
    assert is_global_grid(np.linspace(-90, 90, 33), np.arange(64) * 5.625)
    assert is_global_grid(np.linspace(-88.59375, 88.59375, 64), np.arange(128) * 2.8125)
    assert not is_global_grid(np.arange(20, 61, 2.5), np.arange(0, 61, 2.5))
    assert not is_global_grid(LAT32, LON64[:32])
    assert not is_global_grid(LAT32[8:], LON64)


def test_regional_graph_keeps_only_nodes_inside_the_domain() -> None:
    lat = np.arange(20.0, 60.01, 2.5)
    lon = np.arange(0.0, 60.01, 2.5)
    g = build_graph(lat, lon, refinements=3)  # regional detected automatically
    forced = build_graph(lat, lon, refinements=3, regional=True)
    assert torch.equal(g.mesh_edge_index, forced.mesh_edge_index)
    full = build_graph(lat, lon, refinements=3, regional=False)
    assert full.num_mesh == 642 and g.num_mesh < 642 // 4
    # Every kept node has a grid -> mesh edge; indices are in range.
    assert (np.bincount(g.g2m_edge_index[1].numpy(), minlength=g.num_mesh) >= 1).all()
    for idx, rows in ((g.mesh_edge_index, (g.num_mesh, g.num_mesh)), (g.g2m_edge_index, (g.num_grid, g.num_mesh)),
                      (g.m2g_edge_index, (g.num_mesh, g.num_grid))):
        assert idx.min() >= 0 and idx[0].max() < rows[0] and idx[1].max() < rows[1]
    # Kept = exactly the full-mesh nodes inside the domain, the cells 18.75..61.25N, -1.25..61.25E
    verts, faces = icosahedral_mesh(3)
    v_lat = np.rad2deg(np.arcsin(verts[:, 2]))
    v_lon = (np.rad2deg(np.arctan2(verts[:, 1], verts[:, 0])) + 1.25) % 360 - 1.25
    inside = verts[(v_lat >= 18.75) & (v_lat <= 61.25) & (v_lon >= -1.25) & (v_lon <= 61.25)]
    kept = g.mesh_pos.double().numpy()
    assert len(kept) == len(inside) >= 3
    d_kept, _ = cKDTree(kept).query(inside)
    assert d_kept.max() < 1e-5
    # Mesh -> grid still exactly 3 per grid point: the containing triangle where all its
    # vertices are kept, else the three nearest kept nodes.
    grid = _grid_xyz(g)
    assert (np.bincount(g.m2g_edge_index[1].numpy(), minlength=g.num_grid) == 3).all()
    order = np.argsort(g.m2g_edge_index[1].numpy(), kind="stable")
    tri = g.m2g_edge_index[0].numpy()[order].reshape(-1, 3)
    w = np.linalg.solve(np.stack([kept[tri[:, 0]], kept[tri[:, 1]], kept[tri[:, 2]]], -1), grid[..., None])[..., 0]
    in_tri = (w / w.sum(1, keepdims=True)).min(1) >= -1e-5
    d3 = np.sort(torch.cdist(torch.from_numpy(grid), torch.from_numpy(kept)).numpy(), axis=1)[:, 2]
    d_tri = np.linalg.norm(kept[tri] - grid[:, None], axis=-1).max(1)
    assert np.all(in_tri | (np.abs(d_tri - d3) < 1e-6))
    assert in_tri.mean() > 0.3  # the interior keeps its containing triangles
    # Mesh edges only between kept nodes, still bidirectional.
    pairs = set(map(tuple, g.mesh_edge_index.T.tolist()))
    assert all((r, s) in pairs for s, r in pairs)


# ---------------------------------------------------------------------------- API


def test_cached_graph_memory_and_disk(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    lat, lon = np.linspace(-80, 80, 9), np.arange(0, 360, 20.0)
    cached_graph.cache_clear()
    a = cached_graph(lat, lon, refinements=1)
    assert cached_graph(list(lat), list(lon), refinements=1) is a
    assert cached_graph(lat, lon, refinements=2) is not a
    assert list(tmp_path.iterdir()) == []  # nothing written without cache_dir
    cache = tmp_path / "graphs"
    b = cached_graph(lat, lon, refinements=1, cache_dir=cache)
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"
    cached_graph.cache_clear()
    c = cached_graph(lat, lon, refinements=1, cache_dir=cache)  # read back from disk
    assert c is not b
    for name, tensor in b.tensors().items():
        assert torch.equal(tensor, getattr(c, name)), name
    assert cached_graph(lat, lon, refinements=1, cache_dir=cache) is c
    files[0].write_bytes(b"corrupt")
    cached_graph.cache_clear()
    with pytest.warns(UserWarning, match="unreadable"):
        d = cached_graph(lat, lon, refinements=1, cache_dir=cache)
    assert torch.equal(d.mesh_edge_index, b.mesh_edge_index)


def test_to_device_moves_every_tensor() -> None:
    g = build_graph(np.linspace(-80, 80, 9), np.arange(0, 360, 20.0), refinements=1)
    moved = g.to("meta")
    assert all(t.device.type == "meta" for t in moved.tensors().values())
    assert g.mesh_pos.device.type == "cpu"
    back = g.to("cpu")
    assert isinstance(back, GridMeshGraph) and torch.equal(back.mesh_edge_attr, g.mesh_edge_attr)


def test_xyz_latlon_round_trip() -> None:
    rng = np.random.default_rng(2)
    lat, lon = rng.uniform(-89, 89, 100), rng.uniform(0, 360, 100)
    lat2, lon2 = xyz_to_latlon(latlon_to_xyz(lat, lon))
    np.testing.assert_allclose(lat2, lat, atol=1e-10)
    np.testing.assert_allclose(lon2, lon, atol=1e-10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(latitude=np.zeros((2, 2)), longitude=LON64), "latitude"),
        (dict(latitude=[0.0, np.nan], longitude=LON64), "latitude"),
        (dict(latitude=[-95.0, 0.0], longitude=LON64), "latitude"),
        (dict(latitude=[0.0, 10.0, 5.0], longitude=LON64), "latitude"),
        (dict(latitude=LAT32, longitude=[0.0, 20.0, 10.0]), "longitude"),
        (dict(latitude=LAT32, longitude=[0.0, 180.0, 360.0]), "longitude"),
        (dict(latitude=LAT32, longitude=[]), "longitude"),
        (dict(latitude=LAT32, longitude=LON64, refinements=-1), "refinements"),
        (dict(latitude=LAT32, longitude=LON64, refinements=9), "refinements"),
        (dict(latitude=LAT32, longitude=LON64, refinements=2.0), "refinements"),
        (dict(latitude=LAT32, longitude=LON64, g2m_radius_factor=0.0), "g2m_radius_factor"),
    ],
)
def test_bad_input_raises_clear_error(kwargs, match) -> None:
    with pytest.raises(DiffsciError, match=match):
        build_graph(**kwargs)
    with pytest.raises(DiffsciError, match="unknown option"):
        cached_graph(LAT32, LON64, refinement=3)
