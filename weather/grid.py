"""Cell bounds and cell-area weights of latitude-longitude grids (global or regional).

A grid point stands for the cell around it. The cell bounds of a coordinate are the midpoints
between neighbouring rows (columns); the two end rows are extended outwards by half of their
neighbour spacing, and latitude bounds are clipped to [-90, 90]. The area of the cell between
latitudes ``b_i < b_{i+1}`` (radians) and longitudes ``l_j < l_{j+1}`` on a sphere of radius R is

    A_ij = R^2 (sin b_{i+1} - sin b_i) (l_{j+1} - l_j).

On a global equiangular grid (with or without the poles as rows) the extended end bounds are
exactly +-90 deg, so the weights are WeatherBench 2's latitude weights (Rasp et al. 2024,
``weatherbench2/metrics.py``, ``get_lat_weights``: bounds at the midpoints and at +-90 deg,
``w_i = sin b_{i+1} - sin b_i``, normalised to mean 1). On a regional grid each row gets the area
of its own cell: on 20..90N at 1 deg the 20N row gets ~2.5% of the weight, where bounds at
-90 deg (the global convention) would give it ~68%.

Latitudes may be ascending or descending (ERA5 stores 90 -> -90); weights follow the given order.
"""

from __future__ import annotations

import numpy as np

from diffsci.core.errors import DiffsciError

__all__ = ["EARTH_RADIUS_M", "latitude_bounds", "longitude_bounds", "cell_areas", "cell_area_weights",
           "is_global_longitude", "boundary_mask"]

#: mean Earth radius (m), IUGG
EARTH_RADIUS_M = 6_371_008.8

# an extended end bound within this fraction of a spacing of a pole is the pole (float round-off)
_POLE_SNAP = 1e-6


def _coord(name: str, values) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise DiffsciError(f"{name}: expected a non-empty 1-D coordinate, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise DiffsciError(f"{name}: coordinate has non-finite values")
    if x.size > 1:
        d = np.diff(x)
        if not (np.all(d > 0) or np.all(d < 0)):
            raise DiffsciError(f"{name}: coordinate must be strictly monotonic (no repeated values)")
    return x


def _bounds_sorted(x: np.ndarray) -> np.ndarray:
    """Bounds (N + 1,) of ascending centres x (N,): midpoints, ends extended by half a spacing."""
    if x.size == 1:
        raise DiffsciError("a single row/column has no spacing to define its cell")
    mid = 0.5 * (x[1:] + x[:-1])
    lo = x[0] - 0.5 * (x[1] - x[0])
    hi = x[-1] + 0.5 * (x[-1] - x[-2])
    return np.concatenate([[lo], mid, [hi]])


def latitude_bounds(latitude) -> np.ndarray:
    """Cell bounds in degrees, shape (H, 2) as ``(south, north)`` per row, in the given row order.

    Midpoints between rows; the end rows extended by half a spacing and clipped at +-90.
    A single row spans the globe (-90, 90), as in WeatherBench 2.
    """
    lat = _coord("latitude", latitude)
    if lat.min() < -90 or lat.max() > 90:
        raise DiffsciError(f"latitude: values must lie in [-90, 90], got {lat.min()}..{lat.max()}")
    if lat.size == 1:
        return np.array([[-90.0, 90.0]])
    order = np.argsort(lat)
    s = lat[order]
    b = _bounds_sorted(s)
    spacing = min(s[1] - s[0], s[-1] - s[-2])
    b[0] = -90.0 if b[0] <= -90.0 + _POLE_SNAP * spacing else b[0]
    b[-1] = 90.0 if b[-1] >= 90.0 - _POLE_SNAP * spacing else b[-1]
    out = np.empty((lat.size, 2))
    out[order, 0] = b[:-1]
    out[order, 1] = b[1:]
    return out


def longitude_bounds(longitude) -> np.ndarray:
    """Cell bounds in degrees, shape (W, 2) as ``(west, east)`` per column, in the given order.

    Longitudes are unwrapped first (a regional grid may cross 0 or 180 deg: 350, 355, 0, 5).
    Midpoints between columns, the end columns extended by half a spacing; the total width is at
    most 360 deg (a global grid's columns are then 360 / W wide each).
    """
    raw = np.asarray(longitude, dtype=np.float64)
    lon = np.unwrap(raw, period=360.0)
    if lon.ndim == 1 and lon.size > 1 and not (np.all(np.diff(lon) > 0) or np.all(np.diff(lon) < 0)):
        raise DiffsciError(
            f"longitude: the columns ({raw[0]:g}, {raw[1]:g}, ..., {raw[-1]:g}) are not one contiguous run around "
            "the globe (a regional domain across 0 deg stored as 0..E then W..360?); order them west to east, "
            "e.g. -30..40"
        )
    lon = _coord("longitude", lon)
    if lon.size == 1:
        return np.array([[lon[0] - 180.0, lon[0] + 180.0]])
    order = np.argsort(lon)
    s = lon[order]
    if s[-1] - s[0] >= 360.0:
        raise DiffsciError(f"longitude: columns span {s[-1] - s[0]} deg (>= 360), a column repeats")
    b = _bounds_sorted(s)
    excess = (b[-1] - b[0]) - 360.0
    if excess > 0:  # global: the end cells meet across the seam
        b[0] += 0.5 * excess
        b[-1] -= 0.5 * excess
    out = np.empty((lon.size, 2))
    out[order, 0] = b[:-1]
    out[order, 1] = b[1:]
    return out


def cell_areas(latitude, longitude, radius: float = EARTH_RADIUS_M) -> np.ndarray:
    """Area of each grid cell, shape (H, W), in units of ``radius`` squared (m^2 by default)."""
    lb = np.deg2rad(latitude_bounds(latitude))
    wb = np.deg2rad(longitude_bounds(longitude))
    band = np.sin(lb[:, 1]) - np.sin(lb[:, 0])  # (H,)
    width = wb[:, 1] - wb[:, 0]  # (W,)
    return radius**2 * band[:, None] * width[None, :]


def cell_area_weights(latitude, longitude=None) -> np.ndarray:
    """Cell-area weights normalised to mean 1, float64.

    Without ``longitude``: one weight per row, shape (H,), proportional to
    ``sin(north) - sin(south)`` of the row's cell (on a global grid: WeatherBench 2's latitude
    weights). With ``longitude``: shape (H, W), proportional to each cell's area (rows and
    column widths), mean 1 over all cells.

    >>> w = cell_area_weights([-45.0, 0.0, 45.0])  # bounds -90, -22.5, 22.5, 90
    >>> [round(float(v), 4) for v in w]
    [0.8787, 1.2426, 0.8787]
    """
    lb = np.deg2rad(latitude_bounds(latitude))
    band = np.sin(lb[:, 1]) - np.sin(lb[:, 0])
    if longitude is None:
        return band / band.mean()
    a = cell_areas(latitude, longitude, radius=1.0)
    return a / a.mean()


def is_global_longitude(longitude) -> bool:
    """Whether the columns' cells go all round the globe (their bounds span 360 deg)."""
    wb = longitude_bounds(longitude)
    return bool(wb.max() - wb.min() >= 360.0 - 1e-9)


def boundary_mask(latitude, longitude, width: int) -> np.ndarray:
    """The lateral boundary band of a limited-area grid: shape (H, W) bool, True in the band.

    The band is the ``width`` outermost rows/columns at each *open* edge of the domain: a
    latitude edge whose cell bound is not a pole, and the west/east edges unless the longitudes
    go all round the globe (then they are periodic). On a global grid it is empty; on a
    20..90N grid with all longitudes it is the ``width`` southernmost rows only. Rows and columns
    are counted in the given order (ERA5's 90 -> -90 as well as ascending).
    """
    if not isinstance(width, (int, np.integer)) or width < 0:
        raise DiffsciError(f"boundary width must be a non-negative number of grid cells, got {width!r}")
    lb = latitude_bounds(latitude)
    lat = np.asarray(latitude, dtype=np.float64)
    lon = np.asarray(longitude, dtype=np.float64)
    h, w = lat.size, lon.size
    mask = np.zeros((h, w), dtype=bool)
    if width == 0:
        return mask
    south, north = int(np.argmin(lat)), int(np.argmax(lat))
    rows = np.arange(h)
    if lb[south, 0] > -90.0:  # open southern edge
        mask[np.abs(rows - south) < width] = True
    if lb[north, 1] < 90.0:  # open northern edge
        mask[np.abs(rows - north) < width] = True
    if not is_global_longitude(lon):
        mask[:, :width] = True
        mask[:, w - width:] = True
    return mask
