import math

from pgtm.plotting import OFF_SCALE_FACTOR, off_scale_limit, plot_step_curves


def test_off_scale_limit_leaves_ordinary_curves_autoscaled():
    # a recall dip from 20 to 6 nats and a zero-KL step are the data, not outliers
    assert off_scale_limit([20.0] * 20 + [6.0, 0.0, 21.0, None, math.nan]) is None
    assert off_scale_limit([]) is None


def test_off_scale_limit_cuts_below_a_few_outliers_and_above_everything_else():
    values = [20.0 + 0.1 * t for t in range(21)] + [1.7e4, 1.9e5, 1.8e5, 2.9e5]
    limit = off_scale_limit(values)
    assert limit is not None and max(values[:21]) < limit < min(values[21:])
    assert math.isclose(limit, OFF_SCALE_FACTOR * sorted(values)[18], rel_tol=1e-9)


def test_plot_step_curves_writes_a_picture_with_off_scale_and_missing_points(tmp_path):
    path = plot_step_curves(
        tmp_path / "kl.png",
        {"a": [21.0, 20.5, 3.8e9, 20.0], "b": [21.0, None, 19.0, 6.0]},
        recall=[False, False, True, True],
    )
    assert (tmp_path / "kl.png").stat().st_size > 0 and path.endswith("kl.png")
