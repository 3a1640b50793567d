"""Ideal backbones for tests, built by NeRF (natural extension reference frame: each atom from the
three before it, a bond length, a bond angle and a torsion) with Engh & Huber bond lengths and
angles, so their geometry is known exactly."""

import numpy as np

__all__ = ["place", "ideal_backbone"]


def place(a: np.ndarray, b: np.ndarray, c: np.ndarray, bond: float, angle: float, torsion: float) -> np.ndarray:
    """NeRF: the atom d with |cd| = bond, angle(b, c, d) = angle, dihedral(a, b, c, d) = torsion (degrees)."""
    ang, tor = np.radians(angle), np.radians(torsion)
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d2 = np.array([-bond * np.cos(ang), bond * np.sin(ang) * np.cos(tor), bond * np.sin(ang) * np.sin(tor)])
    return c + d2[0] * bc + d2[1] * m + d2[2] * n


def ideal_backbone(length: int, phi, psi, omega: float = 180.0) -> np.ndarray:
    """Backbone with Engh & Huber geometry, phi/psi constant or per residue (Shape (L,), degrees)
    and constant omega; Shape (L, 4, 3)."""
    phi, psi = np.broadcast_to(phi, (length,)), np.broadcast_to(psi, (length,))
    n = np.array([0.0, 0.0, 0.0])
    ca = np.array([1.458, 0.0, 0.0])
    ang = np.radians(180.0 - 111.2)
    c = ca + 1.525 * np.array([np.cos(ang), np.sin(ang), 0.0])
    atoms = [[n, ca, c]]
    for k in range(length - 1):
        n0, ca0, c0 = atoms[-1]
        n1 = place(n0, ca0, c0, 1.329, 116.2, psi[k])
        ca1 = place(ca0, c0, n1, 1.458, 121.7, omega)
        c1 = place(c0, n1, ca1, 1.525, 111.2, phi[k + 1])
        atoms.append([n1, ca1, c1])
    out = np.zeros((length, 4, 3))
    for i, (n0, ca0, c0) in enumerate(atoms):
        nxt = atoms[i + 1][0] if i + 1 < length else place(n0, ca0, c0, 1.329, 116.2, psi[i])
        o = place(nxt, ca0, c0, 1.231, 120.1, 180.0)
        out[i] = [n0, ca0, c0, o]
    return out
