"""The weather part of ``make demo``: generate a small ERA5-style data set, run an 8-member
forecast with the shipped checkpoint and plot truth vs members vs ensemble mean at two leads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from diffsci.core.figures import panel_grid, save_figure
from diffsci.core.io import write_netcdf
from diffsci.weather.forecast import ForecastSettings, forecast, load_forecaster, write_forecast
from diffsci.weather.generator import generate

__all__ = ["demo", "plot_forecast"]


def plot_forecast(fc, truth, var: str, leads, path: Path, members_shown: int = 3) -> Path:
    """Rows: leads; columns: truth, a few members, ensemble mean, ensemble spread."""
    init = fc.time.values[0]
    fig, axes = panel_grid(len(leads), 3 + members_shown, (2.6, 1.7), extra_height=0.6)
    for r, lead in enumerate(leads):
        f = fc[var].sel(prediction_timedelta=np.timedelta64(lead, "h")).isel(time=0)
        t = truth[var].sel(time=init + np.timedelta64(lead, "h"))
        vmin, vmax = float(t.min()), float(t.max())
        panels = [("truth", t)] + [(f"member {m}", f.isel(realization=m)) for m in range(members_shown)]
        panels += [("ensemble mean", f.mean("realization"))]
        for c, (name, field) in enumerate(panels):
            ax = axes[r, c]
            ax.pcolormesh(fc.longitude, fc.latitude, field, vmin=vmin, vmax=vmax, cmap="viridis", shading="auto")
            ax.set_title(f"{name}, +{lead} h", fontsize=8)
        ax = axes[r, -1]
        ax.pcolormesh(fc.longitude, fc.latitude, f.std("realization"), cmap="magma", shading="auto")
        ax.set_title(f"ensemble spread, +{lead} h", fontsize=8)
    title = f"diffsci weather: {var} ({fc[var].attrs.get('units', '')}), init {str(init)[:16]}"
    return save_figure(fig, path, title=title)


def demo(out: Path) -> Path:
    out = Path(out) / "weather"
    out.mkdir(parents=True, exist_ok=True)
    data = out / "demo_data.nc"
    ds = generate(grid=(32, 64), hours=40, trajectories=1, seed=2024, spinup_hours=120, progress=True)
    write_netcdf(ds, data)
    forecaster = load_forecaster()
    init = ds.time.values[8]
    fds = forecast(forecaster, data, ForecastSettings(init_times=[str(init)], lead_hours=24, members=8, seed=0))
    write_forecast(fds, out / "forecast.nc")
    truth = xr.open_dataset(data)
    png = plot_forecast(xr.open_dataset(out / "forecast.nc"), truth, "z", [6, 24], out / "forecast_z.png")
    err = {}
    for lead in (6, 24):
        f = fds.z.sel(prediction_timedelta=np.timedelta64(lead, "h")).isel(time=0)
        t = truth.z.sel(time=init + np.timedelta64(lead, "h"))
        err[lead] = float(np.sqrt(((f.mean("realization") - t) ** 2).mean()))
    print(f"[demo] weather: {out / 'forecast.nc'}, {png}; z ensemble-mean RMSE +6 h {err[6]:.0f}, +24 h {err[24]:.0f} m2/s2")
    return png
