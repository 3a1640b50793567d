"""Figure helpers: a grid of bare panels, an atomic PNG writer that closes the figure."""

import matplotlib.pyplot as plt
import numpy as np
import pytest

from diffsci.core.figures import panel_grid, save_figure


def test_panel_grid_shape_size_and_no_ticks():
    fig, axes = panel_grid(2, 3, (2.0, 1.5), extra_height=0.5)
    assert axes.shape == (2, 3)
    assert np.allclose(fig.get_size_inches(), (6.0, 3.5))
    axes[0, 0].pcolormesh(np.arange(12.0).reshape(3, 4))
    assert all(len(ax.get_xticks()) == 0 and len(ax.get_yticks()) == 0 for ax in axes.flat)
    plt.close(fig)


def test_save_figure_writes_a_png_atomically_and_closes(tmp_path):
    fig, axes = panel_grid(1, 2, (2.0, 2.0))
    path = save_figure(fig, tmp_path / "sub" / "f.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig._suptitle.get_text() == "t"
    assert not plt.fignum_exists(fig.number)
    assert [p.name for p in path.parent.iterdir()] == ["f.png"]


def test_training_curve_plots_the_logged_loss_and_its_running_mean(tmp_path):
    import json

    import numpy as np

    from diffsci.core.errors import DiffsciError
    from diffsci.core.figures import training_curve

    path = tmp_path / "metrics.jsonl"
    loss = [5.0, 4.0, 3.0, 2.0, 1.0]
    path.write_text("".join(json.dumps({"step": 10 * (i + 1), "loss": v}) + "\n" for i, v in enumerate(loss)))
    out = training_curve(path, tmp_path / "curve.png", window=2)
    assert out["steps"] == [10, 20, 30, 40, 50] and out["loss"] == loss
    np.testing.assert_allclose(out["smoothed"], [4.5, 3.5, 2.5, 1.5])
    assert out["last_smoothed"] == 1.5 and (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DiffsciError, match="no logged steps"):
        training_curve(tmp_path / "empty.jsonl", tmp_path / "e.png")


def test_training_curve_draws_the_logged_evaluations(tmp_path):
    import json

    from diffsci.core.figures import training_curve

    path = tmp_path / "metrics.jsonl"
    rows = [{"step": 10, "loss": 3.0}, {"step": 20, "loss": 2.0, "eval_train_loss": 2.5, "eval_heldout_loss": 2.9},
            {"step": 30, "loss": 1.0}, {"step": 40, "loss": 1.5, "eval_train_loss": 1.2, "eval_heldout_loss": 2.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = training_curve(path, tmp_path / "curve.png", window=2)
    assert out["evals"] == {"eval_train_loss": [[20, 2.5], [40, 1.2]], "eval_heldout_loss": [[20, 2.9], [40, 2.0]]}
    assert out["loss"] == [3.0, 2.0, 1.0, 1.5]
    path.write_text(json.dumps({"step": 10, "loss": 3.0}) + "\n")
    assert training_curve(path, tmp_path / "plain.png")["evals"] == {}
