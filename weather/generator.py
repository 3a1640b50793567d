"""ERA5-style synthetic weather: a forced, damped shallow-water model on the sphere.

The simulator is a spectral shallow-water model (state: geopotential ``phi``, relative
vorticity ``zeta`` and divergence ``delta`` as spherical-harmonic coefficients) built on
the transforms of ``torch_harmonics`` (solver grid: Legendre-Gauss ``nlat x nlon``,
triangular truncation ``T = (nlon - 1) // 3``; 32x64 -> T21, 64x128 -> T42). Tendencies::

    d zeta / dt  = -div((zeta + f) u) + F - (zeta - zeta_jet) / tau_drag
    d delta / dt =  curl((zeta + f) u) - lap(phi + |u|^2 / 2) - r_div * delta
    d phi / dt   = -div(phi u)

with implicit del^8 hyperdiffusion on all fields, RK4 time stepping (``dt = 900 s * 32 /
nlat``) and a stochastic vorticity forcing ``F`` that is AR(1) in time (correlation time
``forcing_tau_hours``) and band-limited in space (degrees ``forcing_lmin..forcing_lmax``).
``zeta_jet`` is the vorticity of two mid-latitude westerly jets, so eddies are carried
eastward as in the real mid-latitudes. The mean depth (5500 m) makes ``z`` look like a
500 hPa geopotential (about 5.4e4 m**2 s**-2).

Slow, balanced flow (no gravity-wave noise): every run starts from a *balanced* state, i.e.
zero divergence, a random large-scale vorticity field plus the jets, and the geopotential
from the nonlinear balance equation ``lap(phi) = curl((zeta + f) u) - lap(|u|^2 / 2)``; the
spin-up applies strong divergence damping (``spinup_div_damping_hours``) before the normal
weak damping, and the forcing is slow compared with the inertial period.

Measured with the defaults at 32x64 (2000 h after 480 h spin-up, seed 0): RMS change of
``z`` over 1 / 3 / 6 / 12 / 24 / 48 h = 4.4 / 11 / 20 / 38 / 68 / 105 % of its spatial std
(``hourly_change_ratio``); winds ~17 m/s RMS, <70 m/s; finite-difference divergence ~5 % of
vorticity. Speed: ~40-60 ms per simulated hour at 32x64 on 2 CPU cores (2000 h: 2 min 20 s
including spin-up, on a loaded machine). Transforms run on one thread (much faster here).

Output conventions (what :func:`generate` returns):

* dims ``time`` (hourly ``datetime64[ns]``, from ``output.start``), ``latitude`` (WB2 cell centres
  ``-90 + (i + 1/2) 180 / nlat``, ascending, no poles: -87.1875..87.1875 for 32 rows; or, for a
  grid with nlat odd and nlon = 2 (nlat - 1), WB2's equiangular grid with poles, -90..90),
  ``longitude`` (``j 360 / nlon``, 0..354.375 for 64 columns), and ``member`` when
  ``output.members`` is given (:class:`GeneratorOutput`). Fields are evaluated *exactly* from the spectral state on that grid
  (a spectral synthesis on an equiangular grid of twice the resolution, then subsampled; on a
  grid with poles, on that grid itself), so no interpolation error is added. The solver runs
  at most at 64x128 (T42, :data:`SIM_MAX_NLAT`): a finer output grid is the solver's state
  evaluated there (attributes ``simulator_grid``, ``output_grid``, ``regridding``); a solver
  finer than 32x64 spins up at 32x64 but for its last 48 h (:func:`spun_up_state`).
* variables ``z`` (m**2 s**-2), ``u``, ``v`` (m s**-1), ``vo`` (s**-1), float32, CF attributes.
* Several trajectories are laid end to end on ONE contiguous hourly time axis; the integer
  coordinate ``trajectory(time)`` says which run each hour belongs to. A forecast window
  must not cross a change of ``trajectory`` (see ``diffsci.weather.data.window_starts``).
* ``sim_state(time, sim_field, sim_coeff, sim_reim)`` (float64, only when ``output.store_state``):
  the complete simulator state at each hour (phi, zeta, delta and the forcing F, packed
  lower-triangular spectral coefficients). :func:`perfect_model_ensemble` restarts the
  model from it exactly; the generator configuration is stored as the JSON attribute
  ``generator_config``.

Randomness: every stream is a ``numpy`` generator seeded by ``SeedSequence((seed, a, b, c))``:
trajectory ``k``'s initial state and spin-up use ``(seed, k, 0, 0)``, its recorded run
``(seed, k, 1, 0)``, ensemble member ``m`` of :func:`generate` ``(seed, k, 2, m)`` and member
``m`` of :func:`perfect_model_ensemble` ``(seed, 3, init_index, m)``. Member ``m`` is
therefore the same whatever the number of members (each member is integrated on its own).
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
import torch
import torch_harmonics as th
import xarray as xr

from diffsci.core.errors import DiffsciError
from diffsci.core.io import check_int, check_range
from diffsci.core.io import progress as progress_bar

__all__ = [
    "GeneratorConfig",
    "GeneratorOutput",
    "simulator_config",
    "spun_up_state",
    "Simulator",
    "SimState",
    "generate",
    "perfect_model_ensemble",
    "hourly_change_ratio",
    "VARIABLE_ATTRS",
]

#: finest solver grid (T42): a larger output grid is the spectral state of this solver evaluated on
#: it (the forcing is at degrees 6..18; the transform tables grow as nlat^3, a 720-row solver's
#: would take tens of GB)
SIM_MAX_NLAT = 64
#: a solver finer than this spins up here (T21) and only its last ``FINE_SPINUP_HOURS`` at its own
#: resolution (:func:`spun_up_state`)
SPINUP_NLAT = 32
FINE_SPINUP_HOURS = 48
GRIDS_SUPPORTED = ("nlon must be 2 * nlat with nlat even >= 8 (cell centres, e.g. 32x64) or 2 * (nlat - 1) with nlat "
                   "odd >= 9 (WeatherBench 2 equiangular with poles, e.g. 33x64, 121x240, 721x1440)")

RADIUS = 6.37122e6
OMEGA = 7.292e-5
GRAVITY = 9.80616

VARIABLE_ATTRS: dict[str, dict[str, str]] = {
    "z": {"units": "m**2 s**-2", "long_name": "Geopotential", "standard_name": "geopotential"},
    "u": {"units": "m s**-1", "long_name": "U component of wind", "standard_name": "eastward_wind"},
    "v": {"units": "m s**-1", "long_name": "V component of wind", "standard_name": "northward_wind"},
    "vo": {
        "units": "s**-1",
        "long_name": "Vorticity (relative)",
        "standard_name": "atmosphere_relative_vorticity",
    },
}


@dataclass(frozen=True)
class GeneratorConfig:
    """Parameters of the synthetic-weather simulator (saved in every generated file).

    Attributes
    ----------
    nlat, nlon : int
        Solver grid (and the output grid, its cell centres, unless ``out_nlat``); ``nlon == 2 * nlat``.
    mean_depth : float
        Mean fluid depth in m (phi mean = g * mean_depth).
    jet_speed : float
        Peak speed (m/s) of the two westerly jets at +-45 deg the vorticity relaxes to.
    drag_days : float
        Relaxation time of the vorticity towards the jets (linear drag), days.
    forcing_rms : float
        RMS of the stochastic vorticity forcing (s**-2) on the grid.
    forcing_lmin, forcing_lmax : int
        Spherical-harmonic degrees forced.
    forcing_tau_hours : float
        Correlation time of the AR(1) forcing.
    eddy_speed : float
        RMS speed (m/s) of the random eddies of the initial state.
    div_damping_hours, spinup_div_damping_hours : float
        E-folding time of the divergence damping after / during the first half of spin-up.
    hyperdiff_hours : float
        E-folding time of del^8 hyperdiffusion at the truncation degree.
    steps_per_hour : int
        RK4 steps per hour; 0 means ``ceil(4 * nlat / 32)`` (dt ~ 1 / nlat).
    out_nlat, out_nlon, out_poles : int, int, bool
        Output grid when it is not the solver's cell centres (``out_nlat = 0``): ``out_poles``
        False, cell centres of an ``out_nlat x out_nlon`` grid (nlon = 2 nlat); True, a
        WeatherBench 2 equiangular grid with poles (nlat odd, nlon = 2 (nlat - 1)). The fields
        are the spectral state evaluated on it (exact for the band-limited state).
    """

    nlat: int = 32
    nlon: int = 64
    mean_depth: float = 5500.0
    jet_speed: float = 5.0
    drag_days: float = 5.0
    forcing_rms: float = 3.5e-10
    forcing_lmin: int = 6
    forcing_lmax: int = 18
    forcing_tau_hours: float = 12.0
    eddy_speed: float = 12.0
    div_damping_hours: float = 24.0
    spinup_div_damping_hours: float = 1.0
    hyperdiff_hours: float = 3.0
    steps_per_hour: int = 0
    out_nlat: int = 0
    out_nlon: int = 0
    out_poles: bool = False

    def __post_init__(self) -> None:
        if check_int(self.nlat, "nlat", minimum=8) % 2:
            raise DiffsciError(f"grid: nlat must be even and >= 8, got {self.nlat}")
        if check_int(self.nlon, "nlon") != 2 * self.nlat:
            raise DiffsciError(f"grid: nlon must be 2 * nlat, got {self.nlat}x{self.nlon}")
        check_int(self.steps_per_hour, "steps_per_hour", minimum=0)
        check_int(self.forcing_lmax, "forcing_lmax", minimum=check_int(self.forcing_lmin, "forcing_lmin", minimum=0))
        for name in ("mean_depth", "drag_days", "forcing_tau_hours", "div_damping_hours", "spinup_div_damping_hours",
                     "hyperdiff_hours"):
            check_range(getattr(self, name), name, 0.0, None, lo_open=True)
        for name in ("forcing_rms", "eddy_speed"):
            check_range(getattr(self, name), name, 0.0, None)
        check_range(self.jet_speed, "jet_speed")
        if self.out_nlat or self.out_poles:
            _check_output_grid(self.out_nlat, self.out_nlon, self.out_poles)

    @property
    def output_shape(self) -> tuple[int, int]:
        """(nlat, nlon) of the output grid."""
        return (self.out_nlat, self.out_nlon) if self.out_nlat else (self.nlat, self.nlon)

    @property
    def truncation(self) -> int:
        """Triangular truncation T (alias-free for quadratic terms)."""
        return (self.nlon - 1) // 3

    @property
    def n_steps_per_hour(self) -> int:
        return self.steps_per_hour or math.ceil(4 * self.nlat / 32)


@dataclass
class SimState:
    """Full simulator state of a batch of runs.

    Attributes
    ----------
    spec : torch.Tensor
        Shape (B, 3, L, L), complex128: phi, zeta, delta spectral coefficients.
    forcing : torch.Tensor
        Shape (B, L, L), complex128: current AR(1) vorticity forcing.
    """

    spec: torch.Tensor
    forcing: torch.Tensor


@contextmanager
def _one_thread():
    """Run the block with torch on one intra-op thread, then restore the thread count.

    The simulator's spherical-harmonic transforms are tiny (32x64 grid, T21): splitting them
    over threads costs more in synchronisation than it gains, and far more when the cores are
    shared. Measured on 2 shared cores (``generate((32, 64), hours=24, spinup_hours=24)``):
    4.5 s on one thread, 79 s on torch's default 2 threads.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *[int(k) for k in keys]]))


class Simulator:
    """Spectral transforms, operators and time stepping for one grid (see module doc)."""

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = c = config
        L = c.truncation + 1
        self.L = L
        kw = dict(lmax=L, mmax=L, csphase=False)
        self.sht = th.RealSHT(c.nlat, c.nlon, grid="legendre-gauss", **kw).double()
        self.isht = th.InverseRealSHT(c.nlat, c.nlon, grid="legendre-gauss", **kw).double()
        self.vsht = th.RealVectorSHT(c.nlat, c.nlon, grid="legendre-gauss", **kw).double()
        self.ivsht = th.InverseRealVectorSHT(c.nlat, c.nlon, grid="legendre-gauss", **kw).double()
        # output synthesis: an equiangular grid with poles, the output grid itself (out_poles) or
        # twice its resolution, whose odd rows and even columns are the output's cell centres
        (h, w), poles = c.output_shape, c.out_poles
        out = (h, w) if poles else (2 * h + 1, 2 * w)
        self.out_rows, self.out_cols = (slice(None), slice(None)) if poles else (slice(1, -1, 2), slice(None, None, 2))
        self.isht_out = th.InverseRealSHT(*out, grid="equiangular", **kw).double()
        self.ivsht_out = th.InverseRealVectorSHT(*out, grid="equiangular", **kw).double()
        cost, _ = th.quadrature.legendre_gauss_weights(c.nlat, -1, 1)
        lats = -torch.arcsin(torch.as_tensor(cost, dtype=torch.float64))  # north -> south
        self.lats = lats
        ell = torch.arange(L, dtype=torch.float64).reshape(L, 1).expand(L, L)
        self.lap = -ell * (ell + 1) / RADIUS**2
        invlap = -(RADIUS**2) / (ell * (ell + 1))
        invlap[0] = 0.0
        self.invlap = invlap
        self.tril = torch.tril(torch.ones(L, L, dtype=torch.bool))
        self.coriolis = (2 * OMEGA * torch.sin(lats)).reshape(-1, 1)
        self.dt = 3600.0 / c.n_steps_per_hour
        lmaxf = float(c.truncation * (c.truncation + 1))
        self.hyperdiff = torch.exp(-self.dt / (c.hyperdiff_hours * 3600.0) * (ell * (ell + 1) / lmaxf) ** 4)
        band = (ell >= c.forcing_lmin) & (ell <= c.forcing_lmax) & self.tril
        if not bool(band.any()):
            raise DiffsciError(
                f"forcing degrees {c.forcing_lmin}..{c.forcing_lmax} are above the truncation T{c.truncation}"
            )
        self.forcing_band = band
        self.ar = math.exp(-self.dt / (c.forcing_tau_hours * 3600.0))
        # jets: u = U sin^2(2 lat), v = 0; zeta_jet from the vector transform
        u_jet = c.jet_speed * torch.sin(2 * lats) ** 2
        uv = torch.stack([u_jet.reshape(-1, 1).expand(c.nlat, c.nlon), torch.zeros(c.nlat, c.nlon, dtype=torch.float64)])
        self.zeta_jet = self.vrtdiv(uv)[0]
        self.phi_mean_coeff = math.sqrt(4 * math.pi) * GRAVITY * c.mean_depth
        # unit-RMS grid noise in the forcing band: scale coefficients so E[grid^2] = 1
        self.band_scale = math.sqrt(4 * math.pi / float(band.sum()))

    # ---- spectral helpers --------------------------------------------------------------
    def vrtdiv(self, uv: torch.Tensor) -> torch.Tensor:
        """Vorticity and divergence coefficients of a vector field. Shape (..., 2, nlat, nlon) -> (..., 2, L, L)."""
        return self.lap * RADIUS * self.vsht(uv)

    def uv(self, vrtdiv: torch.Tensor, out: bool = False) -> torch.Tensor:
        """Wind from vorticity/divergence coefficients. Shape (..., 2, L, L) -> (..., 2, H, W)."""
        t = self.ivsht_out if out else self.ivsht
        return t(self.invlap * vrtdiv / RADIUS)

    def _band_noise(self, rng: np.random.Generator) -> torch.Tensor:
        """Complex white noise in the forcing band with unit grid RMS. Shape (L, L)."""
        L = self.L
        z = rng.standard_normal((L, L)) + 1j * rng.standard_normal((L, L))
        z[:, 0] = math.sqrt(2.0) * z[:, 0].real  # m = 0 coefficients are real
        noise = torch.as_tensor(z, dtype=torch.complex128) * self.band_scale / math.sqrt(2.0)
        return torch.where(self.forcing_band, noise, torch.zeros_like(noise))

    # ---- initial state -----------------------------------------------------------------
    def balanced_state(self, rng: np.random.Generator) -> SimState:
        """A random balanced state: non-divergent jets + eddies, phi from nonlinear balance."""
        c = self.config
        zeta_eddy = self._band_noise(rng)
        u = self.uv(torch.stack([zeta_eddy, torch.zeros_like(zeta_eddy)]))
        rms = float(torch.sqrt((u**2).sum(0).mean()))
        zeta = self.zeta_jet + zeta_eddy * (c.eddy_speed / max(rms, 1e-30))
        vd = torch.stack([zeta, torch.zeros_like(zeta)])
        phi = self.balance(vd)
        spec = torch.stack([phi, zeta, torch.zeros_like(zeta)])[None]
        forcing = (c.forcing_rms * self._band_noise(rng))[None]
        return SimState(spec, forcing)

    def balance(self, vrtdiv: torch.Tensor) -> torch.Tensor:
        """Geopotential from the nonlinear balance equation. Shape (2, L, L) -> (L, L)."""
        uv = self.uv(vrtdiv)
        zeta = self.isht(vrtdiv[0])
        t = self.vrtdiv(uv * (zeta + self.coriolis))
        ke = self.sht(0.5 * (uv**2).sum(0))
        phi = self.invlap * t[0] - ke
        phi[0, 0] = self.phi_mean_coeff
        return phi * self.tril

    # ---- dynamics ----------------------------------------------------------------------
    def tendency(self, spec: torch.Tensor, forcing: torch.Tensor, div_rate: float) -> torch.Tensor:
        """Time derivative of the state. Shape (B, 3, L, L) -> (B, 3, L, L)."""
        grid = self.isht(spec)  # (B, 3, H, W)
        uv = self.uv(spec[:, 1:])  # (B, 2, H, W)
        phi, zeta = grid[:, 0], grid[:, 1]
        # both flux divergences/curls in one vector transform: ((zeta + f) u, phi u)
        fluxes = torch.stack([uv * (zeta + self.coriolis)[:, None], uv * phi[:, None]], dim=1)
        t_all = self.vrtdiv(fluxes)  # (B, 2, 2, L, L)
        t = t_all[:, 0]
        ke = 0.5 * (uv**2).sum(1)
        out = torch.empty_like(spec)
        drag = 1.0 / (self.config.drag_days * 86400.0)
        out[:, 1] = -t[:, 1] + forcing - drag * (spec[:, 1] - self.zeta_jet)
        out[:, 2] = t[:, 0] - self.lap * self.sht(phi + ke) - div_rate * spec[:, 2]
        out[:, 0] = -t_all[:, 1, 1]
        return out

    def step(self, state: SimState, rngs: list[np.random.Generator], div_rate: float) -> SimState:
        """One RK4 step, hyperdiffusion and an AR(1) forcing update (one generator per row)."""
        dt, s, f = self.dt, state.spec, state.forcing
        k1 = self.tendency(s, f, div_rate)
        k2 = self.tendency(s + 0.5 * dt * k1, f, div_rate)
        k3 = self.tendency(s + 0.5 * dt * k2, f, div_rate)
        k4 = self.tendency(s + dt * k3, f, div_rate)
        s = (s + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)) * self.hyperdiff * self.tril
        noise = torch.stack([self._band_noise(r) for r in rngs])
        f = self.ar * f + math.sqrt(1 - self.ar**2) * self.config.forcing_rms * noise
        return SimState(s, f)

    def run_hours(self, state: SimState, rngs: list[np.random.Generator], hours: int, div_rate: float) -> SimState:
        """``hours`` hours of :meth:`step` (``n_steps_per_hour`` each); ``div_rate`` in s**-1."""
        for _ in range(hours * self.config.n_steps_per_hour):
            state = self.step(state, rngs, div_rate)
        return state

    def spinup(self, state: SimState, rng: np.random.Generator, hours: int) -> SimState:
        """``hours`` hours of spin-up: the first half with the strong divergence damping
        (``spinup_div_damping_hours``), the rest with the normal one (:attr:`div_rate`)."""
        c = self.config
        strong = hours // 2
        state = self.run_hours(state, [rng], strong, 1.0 / (c.spinup_div_damping_hours * 3600.0))
        return self.run_hours(state, [rng], hours - strong, 1.0 / (c.div_damping_hours * 3600.0))

    @property
    def div_rate(self) -> float:
        """Normal divergence damping rate, s**-1 (``1 / div_damping_hours``)."""
        return 1.0 / (self.config.div_damping_hours * 3600.0)

    # ---- output ------------------------------------------------------------------------
    def to_grid(self, spec: torch.Tensor) -> dict[str, np.ndarray]:
        """Fields on the output grid (latitude ascending). Shape (B, 3, L, L) -> dict of (B, H, W)."""
        rows, cols = self.out_rows, self.out_cols
        phi = self.isht_out(spec[:, 0])[:, rows, cols]
        zeta = self.isht_out(spec[:, 1])[:, rows, cols]
        uv = self.uv(spec[:, 1:], out=True)[:, :, rows, cols]
        flip = lambda a: np.ascontiguousarray(a.numpy()[..., ::-1, :]).astype(np.float32)  # noqa: E731
        return {"z": flip(phi), "u": flip(uv[:, 0]), "v": flip(uv[:, 1]), "vo": flip(zeta)}

    def refine(self, state: SimState) -> SimState:
        """A state of a coarser simulator (lower truncation, the same orthonormal coefficients) as
        one of this simulator: its coefficients, zero above its truncation (exact, no smoothing)."""
        lc = state.spec.shape[-1]
        if lc > self.L:
            raise DiffsciError(f"refine: a T{lc - 1} state does not fit this T{self.L - 1} simulator")
        spec = state.spec.new_zeros(*state.spec.shape[:-2], self.L, self.L)
        forcing = state.forcing.new_zeros(*state.forcing.shape[:-2], self.L, self.L)
        spec[..., :lc, :lc], forcing[..., :lc, :lc] = state.spec, state.forcing
        return SimState(spec, forcing)

    def pack(self, state: SimState) -> np.ndarray:
        """Packed full state. Returns shape (B, 4, K, 2) float64, K = L (L + 1) / 2."""
        idx = torch.tril_indices(self.L, self.L)
        full = torch.cat([state.spec, state.forcing[:, None]], dim=1)[:, :, idx[0], idx[1]]
        return torch.view_as_real(full).numpy().copy()

    def unpack(self, packed: np.ndarray) -> SimState:
        """Inverse of :meth:`pack`. Shape (B, 4, K, 2) -> SimState."""
        idx = torch.tril_indices(self.L, self.L)
        vals = torch.view_as_complex(torch.as_tensor(np.ascontiguousarray(packed), dtype=torch.float64))
        full = torch.zeros(vals.shape[0], 4, self.L, self.L, dtype=torch.complex128)
        full[:, :, idx[0], idx[1]] = vals
        return SimState(full[:, :3].clone(), full[:, 3].clone())


def output_grid(nlat: int, nlon: int, poles: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """WB2-style latitudes (ascending) and longitudes from 0: cell centres, or with ``poles``
    the equiangular grid from -90 to 90 (WB2's ``equiangular_with_poles``)."""
    lat = np.linspace(-90.0, 90.0, nlat) if poles else -90.0 + (np.arange(nlat) + 0.5) * 180.0 / nlat
    lon = np.arange(nlon) * 360.0 / nlon
    return lat, lon


def _check_output_grid(nlat: int, nlon: int, poles: bool) -> None:
    check_int(nlat, "nlat", minimum=8)
    check_int(nlon, "nlon")
    good = nlat % 2 == 1 and nlat >= 9 and nlon == 2 * (nlat - 1) if poles else nlat % 2 == 0 and nlon == 2 * nlat
    if not good:
        raise DiffsciError(f"grid: {GRIDS_SUPPORTED}; got {nlat}x{nlon}")


def simulator_config(grid, config: GeneratorConfig | None = None) -> GeneratorConfig:
    """``config`` (default: the defaults) set up for the output ``grid`` (nlat, nlon): cell
    centres (nlat even, nlon = 2 nlat) or WB2 equiangular with poles (nlat odd, nlon = 2 (nlat - 1)).
    The solver runs on ``min(nlat, SIM_MAX_NLAT)`` Gauss latitudes (``nlat - 1`` with poles); an
    output grid other than the solver's cell centres is recorded as ``out_nlat/out_nlon/out_poles``."""
    nlat, nlon = _parse_grid(grid)
    poles = nlat % 2 == 1
    _check_output_grid(nlat, nlon, poles)
    solver = min(nlat - 1 if poles else nlat, SIM_MAX_NLAT)
    same = not poles and solver == nlat
    return replace(config or GeneratorConfig(), nlat=solver, nlon=2 * solver, out_nlat=0 if same else nlat,
                   out_nlon=0 if same else nlon, out_poles=poles)


def spun_up_state(sim: Simulator, rng: np.random.Generator, hours: int) -> SimState:
    """A balanced initial state after ``hours`` of :meth:`Simulator.spinup`. A solver finer than
    ``SPINUP_NLAT`` spins up there (T21: a fraction of the cost) for all but the last
    ``FINE_SPINUP_HOURS`` hours, whose state is refined (:meth:`Simulator.refine`: exact) and run
    those hours at the solver's own resolution with the normal damping, which fills its smaller
    scales (hyperdiffusion's e-folding time at the truncation is 3 h); the statistics after it are
    those of a spin-up at full resolution (docs/weather.md, measured)."""
    c = sim.config
    if c.nlat <= SPINUP_NLAT or hours <= FINE_SPINUP_HOURS:
        return sim.spinup(sim.balanced_state(rng), rng, hours)
    coarse = Simulator(replace(c, nlat=SPINUP_NLAT, nlon=2 * SPINUP_NLAT, out_nlat=0, out_nlon=0, out_poles=False))
    state = coarse.spinup(coarse.balanced_state(rng), rng, hours - FINE_SPINUP_HOURS)
    return sim.run_hours(sim.refine(state), [rng], FINE_SPINUP_HOURS, sim.div_rate)


def _parse_grid(grid) -> tuple[int, int]:
    if isinstance(grid, str):
        try:
            a, b = grid.lower().split("x")
            grid = (int(a), int(b))
        except ValueError:
            raise DiffsciError(f"grid: expected NLATxNLON such as 32x64, got {grid!r}") from None
    nlat, nlon = (int(g) for g in grid)
    return nlat, nlon


def _dataset(
    fields: dict[str, np.ndarray],
    times: pd.DatetimeIndex,
    lat: np.ndarray,
    lon: np.ndarray,
    dims: tuple[str, ...],
    extra_coords: dict,
    attrs: dict,
    packed: np.ndarray | None,
) -> xr.Dataset:
    data_vars = {
        k: xr.Variable(dims + ("latitude", "longitude"), v, attrs=VARIABLE_ATTRS[k]) for k, v in fields.items()
    }
    if packed is not None:
        data_vars["sim_state"] = xr.Variable(
            dims + ("sim_field", "sim_coeff", "sim_reim"),
            packed,
            attrs={
                "long_name": "full simulator state (packed lower-triangular spectral coefficients)",
                "description": "sim_field: phi, zeta, delta, forcing; sim_reim: real, imag; "
                "coefficients l >= m ordered as torch.tril_indices(L, L)",
            },
        )
    coords = {
        "time": ("time", times),
        "latitude": ("latitude", lat, {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude"}),
        "longitude": ("longitude", lon, {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude"}),
        **extra_coords,
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _attrs(config: GeneratorConfig, **params) -> dict:
    """The file attributes; the output-grid fields of the config (and the grid attributes) only
    when the output is not the solver's cell centres, so such files are as before."""
    stored = asdict(config)
    grids = {}
    if config.out_nlat:
        h, w = config.output_shape
        grids = {"simulator_grid": f"{config.nlat}x{config.nlon} Gauss, T{config.truncation}",
                 "output_grid": f"{h}x{w} " + ("equiangular with poles" if config.out_poles else "cell centres"),
                 "regridding": f"the T{config.truncation} spectral state evaluated on the output grid (spectral "
                               "synthesis: exact for the band-limited state, no interpolation error)"}
    else:
        for key in ("out_nlat", "out_nlon", "out_poles"):
            del stored[key]
    return {
        "title": "Synthetic ERA5-style weather from a forced shallow-water model on the sphere",
        "source": "diffsci.weather.generator (synthetic, not observations)",
        "synthetic": 1,
        "generator": "diffsci.weather.generator.generate",
        "generator_config": json.dumps(stored),
        "Conventions": "CF-1.8",
        **grids,
        **{k: (json.dumps(v) if isinstance(v, (dict, list, tuple, type(None))) else v) for k, v in params.items()},
    }


@dataclass(frozen=True)
class GeneratorOutput:
    """What a generated dataset holds besides the runs' states.

    ``members``: None for one run per trajectory; M for a perfect-model ensemble of M runs from
    each spun-up state with independent forcing (a leading ``member`` dim). ``start``: the
    first time stamp. ``step_hours``: hours between recorded states (the simulator's own steps
    are unchanged; 6 gives 6-hourly data, one model step of 6 h). ``store_state``: keep the simulator state ``sim_state`` at every hour (for
    :func:`perfect_model_ensemble` restarts)."""

    members: int | None = None
    start: str = "2000-01-01T00:00"
    store_state: bool = True
    step_hours: int = 1

    def __post_init__(self):
        if self.members is not None:
            check_int(self.members, "members")
        check_int(self.step_hours, "step_hours")


def _record_run(sim: Simulator, state: SimState, rng: np.random.Generator, hours: int, output: GeneratorOutput,
                bar) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """``hours`` states ``output.step_hours`` hours apart of one run from ``state`` (the first is
    ``state`` itself), its forcing noise drawn from ``rng``: fields ``{v: (hours, H, W)}`` and, with
    ``output.store_state``, the packed simulator states (hours, ...)."""
    store_state, step = output.store_state, output.step_hours
    s = SimState(state.spec.clone(), state.forcing.clone())
    out, pk = [], []
    for h in range(hours):
        if h > 0:
            s = sim.run_hours(s, [rng], step, sim.div_rate)
            bar.update(step)
        out.append(sim.to_grid(s.spec))
        if store_state:
            pk.append(sim.pack(s))
    bar.update(1)
    fields = {v: np.concatenate([o[v] for o in out]) for v in VARIABLE_ATTRS}
    return fields, (np.concatenate(pk) if store_state else None)


def _layout(runs: list[list[tuple]], output: GeneratorOutput):
    """Per trajectory, per run, ``_record_run``'s results -> fields ``{v: ([R,] T, H, W)}``,
    packed states (or None), the leading dims and the member coordinate (trajectories laid end
    to end along time)."""
    fields = {v: np.concatenate([np.stack([r[0][v] for r in traj]) for traj in runs], axis=1) for v in VARIABLE_ATTRS}
    packed = (np.concatenate([np.stack([r[1] for r in traj]) for traj in runs], axis=1)
              if output.store_state else None)  # (R, T, ...)
    if output.members is None:
        return {v: a[0] for v, a in fields.items()}, (None if packed is None else packed[0]), ("time",), {}
    return fields, packed, ("member", "time"), {"member": ("member", np.arange(output.members))}


def generate(
    grid: tuple[int, int] | str = (32, 64),
    hours: int = 240,
    trajectories: int = 1,
    seed: int = 0,
    spinup_hours: int = 480,
    *,
    config: GeneratorConfig | None = None,
    output: GeneratorOutput | None = None,
    progress: bool = True,
) -> xr.Dataset:
    """Generate hourly synthetic weather in ERA5 conventions (see the module docstring).

    Parameters
    ----------
    grid : (nlat, nlon) or "NLATxNLON"
        Output grid: cell centres, nlon = 2 * nlat (32x64 and 64x128 are the tested ones), or a
        WeatherBench 2 grid with poles, nlat odd, nlon = 2 (nlat - 1) (33x64, 121x240, 721x1440).
        The solver runs at most at 64x128 (T42, :func:`simulator_config`): a finer output grid
        is its spectral state evaluated there (the attributes ``simulator_grid``, ``output_grid``).
    hours : int
        States per trajectory, ``output.step_hours`` (default 1) hours apart (the first is the state at
        the end of spin-up).
    trajectories : int
        Independent runs, laid end to end on the time axis (coordinate ``trajectory``).
    seed : int
        Seed of every random stream.
    spinup_hours : int
        Hours integrated (and discarded) from the balanced initial state (above 32x64: at 32x64
        but for the last 48, :func:`spun_up_state`).
    config : GeneratorConfig, optional
        Simulator parameters (its nlat/nlon are replaced by ``grid``).
    output : GeneratorOutput, optional
        Members (a perfect-model ensemble per trajectory: a leading ``member`` dim), the first
        time stamp, and whether the simulator state is stored (default: one run, 2000-01-01,
        stored).

    Returns
    -------
    xr.Dataset
        ``z, u, v, vo`` with dims ([member,] time, latitude, longitude) and ``sim_state``.
    """
    config = simulator_config(grid, config)
    check_int(hours, "hours")
    check_int(trajectories, "trajectories")
    check_int(spinup_hours, "spinup_hours", minimum=0)
    output = GeneratorOutput() if output is None else output
    sim = Simulator(config)
    members = [None] if output.members is None else list(range(output.members))
    bar = progress_bar(total=trajectories * (spinup_hours + (1 + (hours - 1) * output.step_hours) * len(members)), desc="make-data", unit="h",
                       enabled=progress)
    runs = []  # per trajectory, per member: (fields, packed)
    with torch.no_grad(), _one_thread():
        for k in range(trajectories):
            rng = _rng(seed, k, 0, 0)
            state = spun_up_state(sim, rng, spinup_hours)
            bar.update(spinup_hours)
            runs.append([_record_run(sim, state, _rng(seed, k, 1, 0) if m is None else _rng(seed, k, 2, m), hours,
                                     output, bar) for m in members])
    bar.close()
    fields, packed, dims, extra = _layout(runs, output)
    times = pd.date_range(pd.Timestamp(output.start), periods=trajectories * hours, freq=f"{output.step_hours}h")
    extra["trajectory"] = ("time", np.repeat(np.arange(trajectories), hours))
    steps = {} if output.step_hours == 1 else {"step_hours": output.step_hours}
    attrs = _attrs(config, seed=seed, hours=hours, trajectories=trajectories, spinup_hours=spinup_hours,
                   members=output.members if output.members is not None else -1, **steps)
    return _dataset(fields, times, *_output_coords(config), dims, extra, attrs, packed)


def _output_coords(config: GeneratorConfig) -> tuple[np.ndarray, np.ndarray]:
    return output_grid(*config.output_shape, poles=config.out_poles)


def perfect_model_ensemble(
    ds: xr.Dataset | str,
    init_time,
    lead_hours: int,
    members: int,
    seed: int = 0,
    *,
    progress: bool = False,
) -> xr.Dataset:
    """Restart the simulator from the TRUE state of a generated file and run an ensemble.

    The full state (spectral fields and the forcing) is read from ``sim_state`` at
    ``init_time``; member ``m`` is integrated with forcing noise from
    ``SeedSequence((seed, 3, init_index, m))``, so it does not depend on ``members``.

    Parameters
    ----------
    ds : xr.Dataset or path
        A dataset written by :func:`generate` (``store_state=True``), raw (not renamed).
    init_time : datetime-like or int
        Initial time (or its integer index on the time axis).
    lead_hours : int
        Forecast length; valid times are init + 1 h .. init + lead_hours h.
    members : int
        Ensemble size.

    Returns
    -------
    xr.Dataset
        ``z, u, v, vo`` with dims (member, time, latitude, longitude), coordinates
        ``init_time`` (scalar) and ``lead_time(time)`` (timedelta).
    """
    if isinstance(ds, str):
        ds = xr.open_dataset(ds, engine="netcdf4")
    if "sim_state" not in ds or "generator_config" not in ds.attrs:
        raise DiffsciError(
            "perfect_model_ensemble: the dataset has no 'sim_state' / 'generator_config'; "
            "it must be written by diffsci weather make-data (with the simulator state)"
        )
    if "member" in ds["sim_state"].dims:
        raise DiffsciError("perfect_model_ensemble: the dataset is an ensemble; pass a single-run dataset")
    check_int(lead_hours, "lead_hours")
    check_int(members, "members")
    times = pd.DatetimeIndex(ds["time"].values)
    if isinstance(init_time, (int, np.integer)):
        index = int(init_time)
        if not 0 <= index < len(times):
            raise DiffsciError(f"init_time index {index} outside 0..{len(times) - 1}")
    else:
        hit = np.nonzero(times == pd.Timestamp(init_time))[0]
        if len(hit) == 0:
            raise DiffsciError(f"init_time {init_time} is not a time of the dataset")
        index = int(hit[0])
    config = GeneratorConfig(**json.loads(ds.attrs["generator_config"]))
    sim = Simulator(config)
    state0 = sim.unpack(np.asarray(ds["sim_state"].isel(time=index).values)[None])
    out = {v: np.empty((members, lead_hours, *config.output_shape), np.float32) for v in VARIABLE_ATTRS}
    with torch.no_grad(), _one_thread():
        for m in progress_bar(range(members), desc="perfect-model ensemble", enabled=progress):
            r = _rng(seed, 3, index, m)
            s = SimState(state0.spec.clone(), state0.forcing.clone())
            for h in range(lead_hours):
                s = sim.run_hours(s, [r], 1, sim.div_rate)
                g = sim.to_grid(s.spec)
                for v in VARIABLE_ATTRS:
                    out[v][m, h] = g[v][0]
    t0 = times[index]
    valid = pd.DatetimeIndex([t0 + pd.Timedelta(hours=h + 1) for h in range(lead_hours)])
    lat, lon = _output_coords(config)
    extra = {
        "member": ("member", np.arange(members)),
        "init_time": ((), np.datetime64(t0, "ns")),
        "lead_time": ("time", (valid - t0).to_numpy()),
    }
    attrs = _attrs(config, seed=seed, init_index=index, lead_hours=lead_hours, members=members)
    attrs["generator"] = "diffsci.weather.generator.perfect_model_ensemble"
    return _dataset(out, valid, lat, lon, ("member", "time"), extra, attrs, None)


def hourly_change_ratio(ds: xr.Dataset, variable: str = "z", lags: tuple[int, ...] = (1, 3, 6, 24)) -> dict[int, float]:
    """RMS change over ``lag`` hours divided by the mean spatial std, within trajectories.

    Returns a dict lag -> ratio (a measure of how hard persistence is at that lead).
    """
    x = np.asarray(ds[variable].values, dtype=np.float64)
    traj = np.asarray(ds["trajectory"].values) if "trajectory" in ds.coords else np.zeros(x.shape[0], int)
    spatial_std = float(np.sqrt(x.var(axis=(-2, -1)).mean()))
    result = {}
    for lag in lags:
        ok = traj[lag:] == traj[:-lag]
        d = (x[lag:] - x[:-lag])[ok]
        result[lag] = float(np.sqrt((d**2).mean()) / spatial_std) if d.size else float("nan")
    return result
