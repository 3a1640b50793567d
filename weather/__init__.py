"""diffsci.weather: graph-based probabilistic forecasting on ERA5-style grids.

The checkpoint kinds ``weather-graph-diffusion`` and ``weather-graph-deterministic`` are
registered with :mod:`diffsci.core.checkpoint` when :mod:`diffsci.weather.diffusion` is imported
(``load_forecaster`` and ``diffsci weather train`` import it).

Public API (imported lazily, so ``diffsci --help`` stays fast)::

    from diffsci.weather import open_weather, normalize_layout, generate, build_graph
    from diffsci.weather import load_forecaster, forecast, ForecastSettings, write_forecast
    from diffsci.weather import rollout, NormalizedResidual, DiffusionStep, DirectStep
    from diffsci.weather import evaluate_forecast, crps_ensemble
"""

from importlib import import_module

_EXPORTS = {
    "open_weather": "data", "stack_channels": "data", "NormStats": "data", "compute_norm_stats": "data",
    "static_features": "data", "check_grid": "data", "normalize_layout": "layouts", "time_step": "data",
    "generate": "generator", "perfect_model_ensemble": "generator", "GeneratorConfig": "generator", "GeneratorOutput": "generator",
    "build_graph": "graph", "cached_graph": "graph", "icosahedral_mesh": "mesh", "GridMeshGraph": "graph",
    "cell_area_weights": "grid", "cell_areas": "grid", "boundary_mask": "grid",
    "GraphNet": "model", "GraphNetConfig": "model",
    "WeatherModelConfig": "diffusion", "WeatherModelOptions": "diffusion", "WeatherData": "diffusion",
    "WeatherBatch": "diffusion", "ResidualTask": "diffusion", "build_denoiser": "diffusion",
    "build_direct_net": "diffusion",
    "StepPredictor": "predictor", "NormalizedResidual": "predictor", "DiffusionStep": "predictor",
    "DirectStep": "predictor", "Normalizer": "predictor", "rollout": "predictor",
    "load_forecaster": "forecast", "forecast": "forecast", "ForecastSettings": "forecast", "write_forecast": "forecast",
    "evaluate_forecast": "metrics", "crps_ensemble": "metrics", "latitude_weights": "metrics",
    "spread_skill_ratio": "metrics", "rank_histogram": "metrics",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"diffsci.weather.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'diffsci.weather' has no attribute {name!r}")
