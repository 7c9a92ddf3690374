"""Figures stay readable and cheap at any size: seeded subsamples, a point budget per panel, 40 times."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import run_stages

from amcore.evaluation import plots


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions draw, kept open instead of saved."""
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi: drawn.append(fig))
    yield drawn
    for fig in drawn:
        plots.plt.close(fig)


def _points(ax) -> int:
    return sum(len(c.get_offsets()) for c in ax.collections)


def _cells(n_times: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((n, 3)) + k for k in range(n_times)]


def test_marginals_of_40_times_wrap_and_draw_at_most_the_point_budget_per_panel(figures):
    truth, predicted = _cells(40, 5000), _cells(40, 3000)
    plots.marginals("unused.png", truth, predicted, np.linspace(0, 39, 40), "title", held_out=[1.0])
    (fig,) = figures
    panels = [ax for ax in fig.axes if ax.collections]
    assert len(panels) == 40
    assert max(_points(ax) for ax in panels) <= plots.MAX_POINTS
    assert len({round(ax.get_position().x0, 3) for ax in panels}) == 8  # 8 panels a row beyond 12 times
    assert [ax.get_title() for ax in panels[:3]] == ["t = 0", "t = 1 (held out)", "t = 2"]  # audit 27: unmarked


def test_trajectories_draw_a_seeded_subsample_of_paths_over_a_budget_of_cells_coloured_by_time(figures):
    rng = np.random.default_rng(1)
    traj = rng.standard_normal((11, 5000, 3))
    times = np.linspace(0.0, 2.0, 40)
    for _ in range(2):
        plots.trajectories("unused.png", traj, _cells(40, 5000), "title", times=times, seed=3)
    first, second = figures[:2]
    ax = first.axes[0]
    paths = [line.get_xydata() for line in ax.lines]
    assert len(paths) == plots.MAX_PATHS and _points(ax) <= plots.MAX_POINTS
    np.testing.assert_array_equal(paths[0], [line.get_xydata() for line in second.axes[0].lines][0])  # seeded
    assert len(first.axes) == 2 and first.axes[1].get_ylabel() == "t (observed cells)"  # a colorbar, no legend
    assert ax.get_legend() is None


def test_held_out_panels_wrap_after_six_held_out_times(figures):
    cells = _cells(9, 3000)
    panels = [{"method": m, "holdout": f"{k}", "observed": cells[k], "predicted": cells[k] + 0.1,
               "weight": np.ones(3000)} for k in range(1, 9) for m in ("am", "copy_prev")]  # fmt: skip
    plots.holdout_panels("unused.png", panels)
    (fig,) = figures
    drawn = [ax for ax in fig.axes if ax.collections]
    assert len(drawn) == 16 and max(_points(ax) for ax in drawn) <= plots.MAX_POINTS
    assert len(fig.axes) == 4 * 6  # 2 methods x 2 blocks of rows, 6 held-out times a row


def test_a_held_out_panel_with_weights_that_ran_off_draws_its_finite_cells(figures):
    """uAM weights near the float limit are finite one by one but sum to inf: no probabilities can be made of
    them, so the panel draws the finite cells unweighted and says FAILED for the lost ones (never a crash of the
    table stage that draws it)."""
    rng = np.random.default_rng(2)
    weight = np.full(400, 1e308)
    weight[:5] = np.inf
    panels = [{"method": "uam", "holdout": "1", "observed": rng.normal(size=(300, 2)),
               "predicted": rng.normal(size=(400, 2)), "weight": weight}]  # fmt: skip
    plots.holdout_panels("unused.png", panels)
    (ax,) = [ax for ax in figures[0].axes if ax.collections]
    assert len(ax.collections) == 2 and "FAILED (5 NaN/inf cells)" in ax.get_title()


def test_weighted_particles_are_drawn_by_their_weight(figures):
    """uAM's particles: half of them (a dying population at x0 = 0) carry 4.5 % of the mass. The marginals and the
    projections draw the weighted cloud: 1,000 draws put 45 ± 6.6 (one binomial sd) points there, not 500; a
    uniform draw of particles (the plot before, audit 8) puts 500."""
    rng = np.random.default_rng(4)
    cells = np.vstack([rng.normal(size=(1000, 3)), rng.normal(size=(1000, 3)) + [10.0, 0.0, 0.0]])
    weight = np.concatenate([np.full(1000, 0.045), np.full(1000, 0.955)])
    plots.marginals("unused.png", [cells], [cells], [0.0], "title", max_points=2000, weights=[weight])
    plots.projections("unused.png", [cells], [cells], [0.0], "title", n_points=1000, weights=[weight])
    for fig in figures:
        pushed = fig.axes[0].collections[1].get_offsets()[:, 0]
        assert len(pushed) == 1000 and abs((pushed < 5).sum() - 45) < 4 * 6.6
    plots.marginals("unused.png", [cells], [cells], [0.0], "title", max_points=2000)
    assert abs((figures[-1].axes[0].collections[1].get_offsets()[:, 0] < 5).sum() - 500) < 4 * 16


def test_growth_rates_share_one_scale_centred_on_zero(figures):
    """A rate of +x0 at every cell: red where cells grow, blue where they die, one colour scale for every panel,
    after the mass panel."""
    truth = _cells(3, 500)
    plots.growth("unused.png", [0.0, 1.0, 2.0], [1.0, 2.0, 4.0], [1.0, 1.9, 4.2], "title",
                 rate=lambda x, t: x[:, 0] * (1 + t), truth=truth, axis_names=["PC1", "PC2", "PC3"])  # fmt: skip
    fig = figures[0]
    panels = [ax for ax in fig.axes if ax.get_title().startswith("t = ")]
    assert len(panels) == 3 and panels[0].get_xlabel() == "PC1" and panels[0].get_ylabel() == "PC2"
    ((low, high),) = {(c.norm.vmin, c.norm.vmax) for ax in panels for c in ax.collections}
    rates = np.abs(np.concatenate([x[:, 0] * (1 + k) for k, x in enumerate(truth)]))
    assert low == -high and high == pytest.approx(np.quantile(rates, plots.GROWTH_SCALE_SHARE))
    # Audit 34: a few far cells (rate 1,000 here) set the scale to their own and greyed out every other panel.
    far = [x.copy() for x in truth]
    far[0][:3, 0] = 1000.0
    plots.growth("unused.png", [0.0, 1.0, 2.0], [1.0, 2.0, 4.0], [1.0, 1.9, 4.2], "title",
                 rate=lambda x, t: x[:, 0] * (1 + t), truth=far)  # fmt: skip
    panels = [ax for ax in figures[-1].axes if ax.get_title().startswith("t = ")]
    ((_, reach),) = {(c.norm.vmin, c.norm.vmax) for ax in panels for c in ax.collections}
    assert reach == pytest.approx(high, rel=0.05) and figures[-1].axes[-1]._colorbar.extend == "both"


def test_a_balanced_model_draws_its_mass_held_at_one_beside_the_observed(figures):
    """A balanced objective's growth.png is the mass panel alone: the observed 1, 3, 100 (log scale: a 100-fold
    range) against the model's 1, 1, 1, so a growth it does not learn shows."""
    plots.growth("unused.png", [0.0, 1.0, 2.0], np.array([1.0, 3.0, 100.0]), np.ones(3), "title")
    (fig,) = figures
    (panel,) = [ax for ax in fig.axes if ax.lines]
    observed, pushed = (line.get_ydata() for line in panel.lines)
    assert list(observed) == [1.0, 3.0, 100.0] and list(pushed) == [1.0, 1.0, 1.0]
    assert panel.get_yscale() == "log" and not [ax for ax in fig.axes if ax.get_title().startswith("t = ")]
    assert panel.get_title() == "mass / first time's (log scale)"  # audit 59: linear in one run, log in the next


def test_panels_wrap_into_even_rows():
    """Audit 59: six times and the mass panel drew six panels, then one alone on a second row."""
    assert [plots._grid(n)[:2] for n in (6, 7, 12, 13, 17)] == [(6, 1), (4, 2), (6, 2), (7, 2), (6, 3)]


def test_a_held_out_time_s_mass_is_marked_as_never_trained_on(figures):
    """Audit 18: growth.png drew the held-out stage's mass like any other's."""
    plots.growth("unused.png", [0.0, 1.0, 2.0], [1.0, 2.0, 4.0], np.ones(3), "title", held_out=[1.0])
    (fig,) = figures
    (panel,) = [ax for ax in fig.axes if ax.lines]
    lines = {line.get_label(): line for line in panel.lines}
    assert list(lines["observed"].get_xdata()) == [0.0, 2.0] and list(lines["held out"].get_xdata()) == [1.0]
    assert lines["held out"].get_markerfacecolor() == "none"


def test_infinite_weights_hold_all_the_mass_and_huge_ones_do_not_overflow():
    """Weights that ran off: the infinite ones are the cloud (never left out), and two of 1e308 beside one of
    1e-300 are drawn half and half, not a third each (their sum overflows)."""
    rng = np.random.default_rng(5)
    x = np.arange(3.0)[:, None] * np.ones((1, 2))
    for weight, expected in (([np.inf, 1.0, 1.0], [3000, 0, 0]), ([1e308, 1e308, 1e-300], [1500, 1500, 0])):
        drawn = np.bincount(plots._by_weight(x, np.array(weight), 3000, rng)[:, 0].astype(int), minlength=3)
        assert np.abs(drawn - expected).max() < 4 * np.sqrt(3000 * 0.25)  # binomial sd of a half


def test_the_velocity_panels_say_how_long_their_arrows_are(figures):
    """Each panel scales its arrows to its longest: a near-zero drift looked as strong as a fast flow (audit 9)."""
    x = np.random.default_rng(6).normal(size=(500, 2))
    plots.velocity_field("unused.png", lambda p, t: 0.02 * p, None, [0.0, 0.5, 1.0], x, "title")
    (fig,) = figures
    keys = [c.text.get_text() for ax in fig.axes for c in ax.get_children() if hasattr(c, "labelpos")]  # QuiverKey
    assert len(keys) == 3 and all(key.endswith("/ unit time") for key in keys)


def test_unevenly_spread_times_get_colours_by_their_order(figures):
    """Times 0, 0.05, 0.3, 2, 10 on a linear colour scale drew the first three in one purple (audit 11): they take
    colours by order, the colorbar labelled with the times; even times keep the linear scale."""
    times = [0.0, 0.05, 0.3, 2.0, 10.0]
    truth = _cells(5, 50)
    traj = np.random.default_rng(1).normal(size=(9, 30, 3))
    plots.trajectories("unused.png", traj, truth, "title", times=times)
    plots.trajectories("unused.png", traj, truth, "title", times=[0.0, 1.0, 2.0, 3.0, 4.0])
    uneven, even = ([c.get_facecolor()[0] for c in fig.axes[0].collections] for fig in figures)
    assert all(np.abs(np.subtract(uneven[k][:3], uneven[k + 1][:3])).max() > 0.1 for k in range(2))
    assert [t.get_text() for t in figures[0].axes[1].get_yticklabels()] == ["0", "0.05", "0.3", "2", "10"]
    np.testing.assert_allclose(even[1][:3], plots.matplotlib.cm.viridis(0.25)[:3])  # t = 1 of 0..4


def test_the_held_out_figure_says_where_the_noise_floor_is(figures):
    """Scores of 1.10-1.30 on an axis from 1.1 looked far apart with a floor of 0.129 out of sight (audit 11): a
    floor below the axis is written under its group, one within it drawn as a dashed line."""
    summary = {"am": {"2": np.array([1.10, 1.12]), "mean": np.array([1.11])},
               "copy_prev": {"2": np.array([1.30]), "mean": np.array([1.30])}}  # fmt: skip
    plots.holdout_bars("unused.png", summary, "W1", {"2": 0.129, "mean": 1.2})
    plots.holdout_bars("unused.png", summary, "W1", {"2": 0.129, "mean": 0.1})
    ax, below = figures[0].axes[0], figures[1].axes[0]
    # under its group's label, not at the middle method's dot (audit 47: it overprinted the best method)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["t = 2\nfloor 0.129 (median)", "mean"] and not ax.texts
    (line,) = [c for c in ax.collections if c.get_linestyle()[0][1] is not None]  # the dashed segment
    assert line.get_segments()[0][0][1] == pytest.approx(1.2)
    floor = "noise floor (median of the methods')"  # audit 68: each method's floor differs; the line is their median
    assert floor in [t.get_text() for t in ax.get_legend().get_texts()]
    assert floor not in [t.get_text() for t in below.get_legend().get_texts()]  # no line drawn: no entry


def test_every_figure_marks_the_held_out_time_and_says_what_its_numbers_are(figures):
    """Audit 47: only marginals.png marked the held-out time (a peak of mmd.png there read as a failure); one total
    of points beyond marginals.png's frame hid 35 % of one time's pushed mass; mmd.png's title was cut at both
    edges; uAM's action ratio stood bare; the true arrows vanished under the learned ones; the same method took
    another colour in the training table's figure than in the held-out one's."""
    times, held = [0.0, 0.5, 1.0], [0.5]
    truth = _cells(3, 200)
    far = [x + 50.0 * (k == 2) for k, x in enumerate(_cells(3, 200))]  # the last time's push far off the frame
    plots.marginals(
        "unused.png", truth, far, times, "title", frame=plots.frame(truth, np.array([[-9.0] * 3, [9.0] * 3]))
    )
    plots.projections("unused.png", truth, truth, times, "title", held_out=held)
    long = "otcfm (FM): squared MMD of pushed vs observed cells, a title far wider than its figure"
    plots.distances_over_time("unused.png", {"mmd": {"0.5": 0.2, "1": 0.01}}, long, held_out=held)
    audit = {"action_flow": {"0-0.5": 1.0, "0.5-1": 2.0}, "action_geodesic": {"0-0.5": 2.0, "0.5-1": 3.0},
             "action_ratio": 0.6}  # fmt: skip
    plots.action_audit("unused.png", audit, "title", times=times, held_out=held, growth=True)
    plots.velocity_field("unused.png", lambda p, t: p, lambda p, t: p, times, np.concatenate(truth)[:, :2], "title",
                         cells=[x[:, :2] for x in truth], held_out=held)  # fmt: skip
    plots.metric_by_time("unused.png", times, {"am": [1, 2, 3], "otcfm": [1, 2, 3]}, "W1", "title")
    marg, proj, mmd, action, velocity, by_time = figures
    panels = [ax.get_title() for ax in marg.axes if ax.collections]
    assert panels[:2] == ["t = 0", "t = 0.5"] and panels[2] == "t = 1\n200/200 pushed off the frame"
    assert [ax.get_title() for ax in proj.axes if ax.get_title()] == ["t = 0", "t = 0.5 (held out)", "t = 1"]
    ax = mmd.axes[0]
    assert [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":"] == [0.5]
    width = max(len(line) for line in mmd._suptitle.get_text().split("\n"))
    assert width <= mmd.get_figwidth() * 9 and "otcfm (FM)" in mmd._suptitle.get_text()
    ax = action.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0-0.5*", "0.5-1*"]
    assert "the geodesic bounds no uAM flow" in ax.get_title()
    assert [ax.get_title(loc="left") for ax in velocity.axes[:3]] == ["t = 0", "t = 0.5 (held out)", "t = 1"]
    learned, true = (q for q in velocity.axes[0].collections if hasattr(q, "U"))  # quivers, learned first
    assert true.get_zorder() > learned.get_zorder() and velocity.axes[0].collections[0].get_offsets().shape == (200, 2)
    styles, cmap = plots.method_styles(["am", "otcfm"]), plots.plt.get_cmap("tab20")
    for line in by_time.axes[0].lines:
        assert plots.matplotlib.colors.to_rgba(line.get_color()) == cmap(styles[line.get_label()])


def test_one_dimensional_data_get_velocity_curves(figures):
    """1-d data drew an empty panel titled "no field to draw" on axes labelled "training loss" (audit 15): the field
    against position, a curve per time, the truth dashed."""
    x = np.random.default_rng(7).normal(size=(300, 1))
    plots.velocity_curves("unused.png", lambda p, t: -p * (1 + t), lambda p, t: -p, [0.0, 1.0, 2.0], x, "title")
    (fig,) = figures
    ax = fig.axes[0]
    solid = [line for line in ax.lines if line.get_linestyle() == "-" and len(line.get_xdata()) == 200]
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(solid) == 3 and len(dashed) == 3 and ax.get_xlabel() == "x0"
    np.testing.assert_allclose(solid[2].get_ydata(), -3 * solid[2].get_xdata())


def test_constant_features_make_no_axis(figures):
    """A gene no cell expresses (feature 0) and a column of ones (feature 2): the panels draw features 1 and 3, not a
    line of cells at 0."""
    rng = np.random.default_rng(2)
    truth = [np.column_stack([np.zeros(300), rng.normal(k, 1, 300), np.ones(300), rng.normal(0, 1, 300)])
             for k in range(3)]  # fmt: skip
    box = np.stack([np.min(np.concatenate(truth), 0), np.max(np.concatenate(truth), 0)])
    shown = plots.shown_features(box, count=3)
    assert shown == (1, 3)  # no constant one stands in for a third
    assert plots.shown_features(box[:, [0, 1, 2]]) == (1,)  # one varies: drawn as 1-d data
    assert plots.shown_features(box[:, [0, 2]]) == (0,)  # none varies: the first
    names = ["Xist", "Sox2", "ones", "Nanog"]
    plots.marginals("unused.png", truth, truth, [0.0, 1.0, 2.0], "title", axis_names=names, shown=shown[:2])
    plots.velocity_field("unused.png", lambda p, t: p + 1.0, None, [0.0, 1.0, 2.0], np.concatenate(truth), "title",
                         shown=shown[:2], axis_names=names)  # fmt: skip
    marginal, field = figures
    panel = marginal.axes[0]
    drawn = panel.collections[0].get_offsets()
    assert np.ptp(drawn[:, 0]) > 0 and np.ptp(drawn[:, 1]) > 0  # neither axis a constant feature
    assert marginal.axes[-1].get_xlabel() == "Sox2" and marginal.axes[0].get_ylabel() == "Nanog"
    arrows = field.axes[0].collections[-1]
    assert np.all(np.isfinite(arrows.U)) and field.axes[0].get_xlabel() == "Sox2"
    assert field.axes[0].get_ylabel() == "Nanog"


def test_one_feature_is_drawn_as_histograms_and_paths_against_time(figures):
    rng = np.random.default_rng(3)
    truth = [rng.normal(k, 1, (400, 1)) for k in range(3)]
    plots.marginals("unused.png", truth, truth, [0.0, 1.0, 2.0], "title")
    traj = np.cumsum(rng.normal(0, 0.1, (21, 50, 1)), axis=0)
    plots.trajectories("unused.png", traj, truth, "title", times=[0.0, 1.0, 2.0], path_times=np.linspace(0, 2, 21))
    marginal, paths = figures
    assert marginal.axes[0].patches and not marginal.axes[0].collections  # bars, not points on a line
    assert marginal.axes[0].get_ylabel() == "density"
    line = paths.axes[0].lines[0].get_xydata()
    np.testing.assert_allclose(line[:, 0], np.linspace(0, 2, 21))  # x: the step's time
    assert np.abs(traj[:, :, 0] - line[:, 1:2]).sum(0).min() < 1e-9  # y: one particle's position at each step
    assert paths.axes[0].get_xlabel() == "t"


def test_a_method_keeps_its_colour_and_marker_across_datasets():
    """Audit 19: styles went by position, so torchcfm_ot wore copy_prev's red triangle in the next dataset's
    figure. They go by name now, distinct within a figure."""
    one = plots.method_styles(["am", "fm_spline", "copy_prev", "ot_displacement"])
    other = plots.method_styles(["torchcfm_ot", "copy_prev", "am", "otcfm", "spline_path"])
    assert one["copy_prev"] == other["copy_prev"] and one["am"] == other["am"]
    many = plots.method_styles([f"m{i}" for i in range(20)])
    assert len(set(many.values())) == 20


def test_the_held_out_figure_draws_each_paired_difference_with_its_interval(figures):
    """With paired differences the table figure gains a panel: a row per peer, the mean over held-out times at its
    difference with the interval's ends, each time beside it, a zero line to read the sign against."""
    summary = {"am": {"1": np.array([1.0, 1.2]), "2": np.array([2.0, 2.2]), "mean": np.array([1.5, 1.7])},
               "fm": {"1": np.array([1.1, 1.3]), "2": np.array([1.9, 2.1]), "mean": np.array([1.5, 1.7])},
               "copy_prev": {"1": np.array([3.0]), "2": np.array([4.0]), "mean": np.array([3.5])}}  # fmt: skip
    pairs = {"fm": {"1": (-0.1, -0.3, 0.1, 2, True), "2": (0.1, -0.1, 0.3, 2, True), "mean": (0.0, -0.2, 0.2, 2, True)},
             "copy_prev": {"1": (-2.0, -2.5, -1.5, 2), "2": (-2.0, -2.4, -1.6, 2),
                           "mean": (-2.0, -2.3, -1.7, 2)}}  # fmt: skip
    plots.holdout_bars("unused.png", summary, "W1", None, pairs, "am")
    (fig,) = figures
    side = fig.axes[1]
    assert [t.get_text() for t in side.get_yticklabels()] == ["fm", "copy_prev"]
    dots = {(round(float(line.get_xdata()[0]), 6), round(float(line.get_ydata()[0]), 2))
            for line in side.lines if len(line.get_xdata()) == 1}  # fmt: skip
    assert (-2.0, 1.3) in dots and (0.0, 0.3) in dots  # each peer's mean, on its row
    spans = [
        seg[:, 0] for c in side.collections for seg in c.get_segments() if len(seg) == 2 and seg[0, 1] == seg[1, 1]
    ]
    assert any(np.allclose(sorted(x), [-2.3, -1.7]) for x in spans)  # copy_prev's mean interval
    assert any(
        line.get_xdata()[0] == 0 and line.get_xdata()[1] == 0 for line in side.lines if len(line.get_xdata()) == 2
    )


def test_a_few_far_cells_set_no_axis(figures):
    """Gaussian clouds and 3 cells of 9,000 at 40 (audit 21: 12 of 60,000 far out left the clouds a corner): the
    frame holds the clouds, the marginals and trajectories keep to it and say how many drawn points lie beyond;
    the velocity grid spans it."""
    rng = np.random.default_rng(0)
    truth = [rng.normal(size=(3000, 2)) + k for k in range(3)]
    truth[1][:3] = 40.0
    box = np.stack([np.min(np.concatenate(truth), 0), np.max(np.concatenate(truth), 0)])
    held = plots.frame(truth, box)
    assert (held[1] < 10).all() and (held[0] > -6).all() and box[1].max() == 40
    plots.marginals("unused.png", truth, truth, [0.0, 1.0, 2.0], "title", max_points=20_000, frame=held)
    plots.trajectories("unused.png", np.stack(truth), truth, "title", n_paths=3000, frame=held)
    plots.velocity_field("unused.png", lambda x, t: -x, None, [0.0, 1.0, 2.0], np.concatenate(truth), "t", box=held)
    marginals, paths, field = figures
    assert marginals.axes[0].get_xlim() == pytest.approx((held[0][0], held[1][0]))
    said = re.search(r"(\d+) observed and (\d+) pushed points drawn lie beyond", marginals._suptitle.get_text())
    assert 3 <= int(said[1]) <= 9 and said[1] == said[2]  # the 3 far cells, and at most the 0.1 % tails of 9,000
    assert paths.axes[0].get_ylim() == pytest.approx((held[0][1], held[1][1]))
    assert field.axes[0].collections[0].get_offsets()[:, 0].max() == pytest.approx(held[1][0])
    constant = [np.column_stack([np.zeros(2000), rng.normal(size=2000)]) for _ in range(2)]
    constant[0][0, 0] = 1.0  # a feature one cell of 4,000 holds off its value: its whole range, not a point
    edges = np.stack([np.min(np.concatenate(constant), 0), np.max(np.concatenate(constant), 0)])
    assert plots.frame(constant, edges)[:, 0].tolist() == [0.0, 1.0]


def test_one_held_out_time_draws_its_far_peer_at_the_edge(figures):
    """With a single held-out time there is no mean: the time is the row's point, and a peer far off (copying the
    previous time, -0.4 against differences of 0.01) is written at the edge, not clipped away in silence."""
    summary = {m: {"1": np.array([0.5, 0.51])} for m in ("am", "fm", "otcfm", "spline", "copy_prev")}
    pairs = {"fm": {"1": (0.01, -0.01, 0.03, 2, True)}, "otcfm": {"1": (-0.02, -0.03, -0.01, 2, True)},
             "spline": {"1": (0.0, -0.02, 0.02, 2, True)},
             "copy_prev": {"1": (-0.4, -0.42, -0.38, 2, True)}}  # fmt: skip
    plots.holdout_bars("unused.png", summary, "W1", None, pairs, "am")
    (fig,) = figures
    side = fig.axes[1]
    assert [t.get_text() for t in side.texts] == ["◀ -0.4"] and side.get_xlim()[0] > -0.4


def test_a_far_off_time_of_a_close_peer_is_written_at_the_edge(figures):
    """Audit 27: copy_prev's mean was on the axis, but one of its times (-0.146, three times the median interval
    end away) fell off it, and the open dot vanished without a word. It is now written at the edge, with its time."""
    summary = {
        m: {"6": np.array([0.5, 0.51]), "30": np.array([0.5]), "mean": np.array([0.5])}
        for m in ("am", "fm", "copy_prev")
    }
    pairs = {"fm": {"6": (0.01, -0.01, 0.03, 2, True), "30": (-0.01, -0.03, 0.01, 2, True),
                    "mean": (0.0, -0.02, 0.02, 2, True)},
             "copy_prev": {"6": (-0.01, -0.03, 0.01, 2, True), "30": (-0.146, -0.176, -0.116, 2, True),
                           "mean": (-0.045, -0.057, -0.033, 2, True)}}  # fmt: skip
    plots.holdout_bars("unused.png", summary, "W1", None, pairs, "am")
    (fig,) = figures
    side = fig.axes[1]
    assert [t.get_text() for t in side.texts] == ["◀ -0.146 (t = 30)"] and side.get_xlim()[0] > -0.146


def test_a_true_field_far_shorter_than_the_learned_one_still_shows(figures):
    """Audit 27: eAM with 3 times the sigma learned a drift 9 times the true one, and the arrow scale, set by the
    learned field alone, drew the true arrows as dots. The longest arrow of either field spans one grid cell."""
    x = np.random.default_rng(6).normal(size=(500, 2))
    plots.velocity_field("unused.png", lambda p, t: 9.0 * p, lambda p, t: -2.0 * p, [0.0, 0.5, 1.0], x, "title")
    plots.velocity_field("unused.png", lambda p, t: 0.1 * p, lambda p, t: -2.0 * p, [0.0, 0.5, 1.0], x, "title")
    scales = [[q.scale for q in ax.collections if hasattr(q, "scale")] for fig in figures for ax in fig.axes[:1]]
    (large_true, large_learned), (small_true, small_learned) = scales
    assert large_true == large_learned and small_true == small_learned  # one scale for both, in each figure
    assert small_learned == pytest.approx(large_learned * 2.0 / 9.0)  # by the longer field: the learned, then the true


def test_a_far_peer_at_every_time_gets_one_label(figures):
    """Review of audit 27's change: a peer off the axis at every held-out time wrote a label per time beside its
    mean's, a pile at the edge. Its times keep their mean's label company."""
    close = {"6": (0.01, -0.01, 0.03, 2, True), "30": (-0.01, -0.03, 0.01, 2, True),
             "mean": (0.0, -0.02, 0.02, 2, True)}  # fmt: skip
    pairs = {"fm": close, "spline": close, "copy_prev": {"6": (-0.3, -0.32, -0.28, 2, True),
             "30": (-0.35, -0.37, -0.33, 2, True), "mean": (-0.325, -0.345, -0.305, 2, True)}}  # fmt: skip
    summary = {m: {h: np.array([0.5]) for h in ("6", "30", "mean")} for m in ("am", *pairs)}
    plots.holdout_bars("unused.png", summary, "W1", None, pairs, "am")
    (fig,) = figures
    assert [t.get_text() for t in fig.axes[1].texts] == ["◀ -0.325"]


def _moving_genes(dim: int, times: int = 3, n: int = 400, seed: int = 5) -> tuple[list[np.ndarray], np.ndarray]:
    """Standardised-looking genes, each of unit spread, with the population moving 4 units a time along a direction
    spread over every gene: the first two genes hold a sliver of the motion (audit 28)."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    return [rng.normal(size=(n, dim)) + 4.0 * k * direction for k in range(times)], direction


def _box(cells: list[np.ndarray]) -> np.ndarray:
    pooled = np.concatenate(cells)
    return np.stack([pooled.min(0), pooled.max(0)])


def test_the_plots_turn_to_the_principal_axes_where_the_first_features_hold_little_of_the_spread(figures):
    """Audit 28: on 30 genes whose population moves along a direction across all of them, the plots drew genes 0
    and 1 (a round blob at every time; copying the previous time looked as good as AM). The view is now the training
    cells' principal axes, the first along the motion; a plane that holds the spread already (PCA coordinates) and
    three features or fewer (a simulator's axes) are drawn as they are."""
    cells, direction = _moving_genes(30)
    view = plots.choose_view(cells, _box(cells))
    assert view.turned and view.held < plots.VIEW_SHARE
    assert abs(view.basis[:, 0] @ direction) > 0.99  # the first axis is the motion's
    y = np.random.default_rng(0).normal(size=(5, 30))
    np.testing.assert_allclose(view.turn(view.back(y)), y, atol=1e-12)  # orthonormal: the view loses nothing
    matrix = np.random.default_rng(1).normal(size=(30, 30))
    turned = view.field(lambda x, t: x @ matrix.T)  # a linear field: A x, read on the view's axes
    np.testing.assert_allclose(turned(y, 0.0), (view.back(y) @ matrix.T) @ view.basis, atol=1e-9)
    names = view.names(None)
    assert names[0].startswith("principal axis 1 (") and len(names) == 30
    # The marginals drawn in the view: the observed clouds' means move 4 a time along the first axis.
    plots.marginals("unused.png", [view.cells(x) for x in cells], [view.cells(x) for x in cells], [0.0, 1.0, 2.0],
                    "title", axis_names=names)  # fmt: skip
    panels = figures[0].axes
    means = [panels[k].collections[0].get_offsets()[:, 0].mean() for k in range(3)]
    np.testing.assert_allclose(np.diff(means), 4.0, atol=0.3)  # 200 drawn cells: the mean's error is about 0.07
    assert panels[-1].get_xlabel() == names[0]
    # A few far cells choose no axis (12 of 1,200, 60 units out, turned the first axis 67 degrees off the motion).
    rng = np.random.default_rng(4)
    far = [x.copy() for x in cells]
    for x in far:
        x[:4] += 60.0 * rng.normal(size=(4, 30)) / np.sqrt(30) * 8
    assert abs(plots.choose_view(far, _box(far)).basis[:, 0] @ direction) > 0.99
    # PCA coordinates (spread falling from the first feature) and 3-d data keep their own axes.
    rng = np.random.default_rng(3)
    pca = [rng.normal(size=(400, 10)) * np.geomspace(5, 0.1, 10) + k for k in range(3)]
    assert not plots.choose_view(pca, _box(pca)).turned
    small = [x[:, :3] for x in cells]
    assert not plots.choose_view(small, _box(small)).turned


def test_evaluate_and_the_held_out_panels_draw_the_view_of_the_training_cells(tmp_path, capsys, figures):
    """Through evaluate and the table's held-out panels: both turn to the principal axes of the training times'
    cells, say so, and the held-out time's cells never choose the view."""
    from amcore.evaluation import table

    cells, direction = _moving_genes(6, times=4, n=200)
    labels = np.repeat([0.0, 1.0, 2.0, 3.0], 200)
    np.savez(tmp_path / "d.npz", X=np.concatenate(cells).astype(np.float32), t=labels)
    store, run = run_stages(tmp_path, {"source": "npz", "path": str(tmp_path / "d.npz")}, "2", 20, 2)
    assert "amcore evaluate am: the plots draw the training cells' first two principal axes" in capsys.readouterr().err
    import hashlib

    from amcore import load

    digest = hashlib.sha256((tmp_path / "d.npz").read_bytes()).hexdigest()
    assert load(run / "m.pt").info["data_sha256"] == digest  # audit 31: the data a checkpoint saw, from it alone
    marginal = figures[0]
    assert marginal.axes[0].get_ylabel().startswith("principal axis 2 (")
    beyond = re.search(r"(\d+) observed and \d+ pushed points drawn lie beyond", marginal.get_suptitle())
    assert beyond is None or beyond[1] == "0", marginal.get_suptitle()  # the frame is in the view's coordinates
    # The view is the training times' (0, 1, 3) alone: the held-out cells never choose it.
    from amcore.data.store import read_store

    snaps = read_store(store)
    view = plots.training_view(snaps, _box([np.asarray(snaps.x)]))
    again = plots.choose_view([cells[k] for k in (0, 1, 3)], _box(cells))
    np.testing.assert_allclose(np.abs(view.basis[:, :2].T @ again.basis[:, :2]), np.eye(2), atol=1e-6)
    panels = table.load_panels(
        [{"method": "am", "holdout": "2", "store": str(store), "prediction": str(run / "t.zarr")}]
    )
    assert panels[0]["axes"][0].startswith("principal axis 1 (")
    np.testing.assert_allclose(panels[0]["observed"], view.turn(snaps.snapshot(2)), atol=1e-9)


def test_the_held_out_figure_draws_the_sliced_distance_beside_w1(figures):
    """Audit 28: in 30 dimensions W1 of 2,000 cells ranked the baselines first and every other distance ranked AM
    first, and the figure drew W1 alone. A row per further distance, its dots without a paired panel."""
    summary = {"am": {"4": np.array([4.3, 4.4]), "mean": np.array([4.3, 4.4])}, "copy_prev": {"4": np.array([4.5])}}
    sliced = {"am": {"4": np.array([0.012, 0.013])}, "copy_prev": {"4": np.array([0.21])}}
    pairs = {"copy_prev": {"4": (-0.15, -0.2, -0.1, 2, True)}}
    plots.holdout_bars("unused.png", summary, "W1", None, pairs, "am", [(sliced, "sliced W1", None, None)])
    (fig,) = figures
    dots, side, sliced_dots, empty = fig.axes
    assert dots.get_ylabel() == "W1" and sliced_dots.get_ylabel() == "sliced W1" and not empty.axison
    assert side.has_data() and sliced_dots.has_data()


def test_the_velocity_arrows_stay_in_the_frame_whatever_the_axes_spans(figures):
    """Audit 33 and its review: arrows of the edge rows ran out of the frame, and more so where one axis spans ten
    times the other (an arrow is as long along either): the longest arrow spans the shorter grid spacing and the
    frame has a cell of margin."""
    rng = np.random.default_rng(0)
    cells = np.column_stack([rng.uniform(0, 10, 300), rng.uniform(0, 1, 300)])
    for x in (cells, cells[:, ::-1]):
        plots.velocity_field("unused.png", lambda p, t: np.tile([0.0, 1.0], (len(p), 1)), None, [0.0, 1.0], x,
                             "title")  # fmt: skip
        for ax in figures[-1].axes[:2]:
            arrows = ax.collections[-1]
            tips = arrows.get_offsets() + np.column_stack([arrows.U, arrows.V]) / arrows.scale
            (left, right), (low, high) = ax.get_xlim(), ax.get_ylim()
            assert left <= tips[:, 0].min() and tips[:, 0].max() <= right
            assert low <= tips[:, 1].min() and tips[:, 1].max() <= high, (tips[:, 1].max(), high)


def test_log_spaced_times_get_an_axis_on_their_clock_and_the_action_a_log_scale(figures):
    """Audit 50: hours 0.1 to 168 put 0.1-4 h in the first 2 % of mmd.png's and growth.png's axes (the held-out
    marker at 2 h on top of them), and action.png's linear axis hid every interval after 12 h."""
    times = [0.1, 0.3, 1.0, 2.0, 4.0, 24.0, 168.0]
    plots.distances_over_time("unused.png", {"mmd": {f"{t:g}": 0.01 * k for k, t in enumerate(times)}}, "title",
                              held_out=[2.0])  # fmt: skip
    plots.growth("unused.png", times, np.ones(7), np.ones(7), "title", held_out=[2.0])
    plots.distances_over_time("unused.png", {"mmd": {"0": 0.1, "1": 0.2, "2": 0.3}}, "title")
    mmd, mass, even = (fig.axes[0] for fig in figures)
    np.testing.assert_allclose(mmd.lines[0].get_xdata(), np.arange(7))
    assert mmd.lines[-1].get_xdata()[0] == 3  # the held-out 2 h at its place among the observed times
    assert [t.get_text() for t in mmd.get_xticklabels()] == ["0.1", "0.3", "1", "2", "4", "24", "168"]
    lines = {line.get_label(): line for line in mass.lines}
    assert list(lines["held out"].get_xdata()) == [3.0] and list(lines["observed"].get_xdata()) == [0, 1, 2, 4, 5, 6]
    np.testing.assert_allclose(even.lines[0].get_xdata(), [0.0, 1.0, 2.0])  # even times: the times themselves
    intervals = [f"{a:g}-{b:g}" for a, b in zip(times[:-1], times[1:], strict=True)]
    audit = {"action_flow": dict(zip(intervals, [3.0, 2.0, 1.0, 0.5, 0.05, 0.004], strict=True)),
             "action_geodesic": dict(zip(intervals, [3.2, 2.1, 1.1, 0.6, 0.06, 0.005], strict=True)),
             "action_ratio": 0.9}  # fmt: skip
    plots.action_audit("unused.png", audit, "title", times=times)
    assert figures[-1].axes[0].get_yscale() == "log"


def test_time_labels_tell_every_time_apart():
    """Audit 58: years 1990, 1991 and 1993 were all titled t = 1.99e+03; three digits stay where they suffice."""
    assert plots._time_labels([1990.0, 1991.0, 1993.0, 2000.0]) == ["1990", "1991", "1993", "2000"]
    assert plots._time_labels([0.1, 0.25, 1.0]) == ["0.1", "0.25", "1"]
    assert plots._time_labels([3456000.0, 3542400.0, 3542401.0]) == ["3456000", "3542400", "3542401"]
    assert plots._time_title(1991.0, times=[1990.0, 1991.0]) == "t = 1991"


def test_a_title_of_several_lines_is_fitted_line_by_line():
    """Audit 68: marginals.png's second title line (the points beyond the frame) ran off both edges of three panels;
    each line now wraps to the figure's width and keeps its own break."""
    import matplotlib.pyplot as plt

    from amcore.evaluation.plots import _fit

    fig = plt.figure(figsize=(7.5, 3))
    long = ("12 observed and 837 pushed points drawn lie beyond the frame (the central 99.9% of the observed cells, "
            "within their range; each panel counts its own)")  # fmt: skip
    lines = _fit(f"uam (UAM): observed vs pushed\n{long}", fig).split("\n")
    plt.close(fig)
    assert lines[0] == "uam (UAM): observed vs pushed" and len(lines) >= 3
    assert max(map(len, lines)) <= 7.5 * 9 and " ".join(lines[1:]) == long


def test_a_method_with_a_flagged_run_is_marked_in_the_held_out_figure(figures):
    """Audit 68: a uAM whose course failed topped table.png with nothing on it; its legend entry now says so."""
    summary = {"am": {"2": np.array([1.10, 1.12])}, "uam": {"2": np.array([0.9, 0.95])}}
    plots.holdout_bars("unused.png", summary, "W1", flagged={"uam"})
    assert [t.get_text() for t in figures[0].axes[0].get_legend().get_texts()] == ["am", "uam ⚑ (flagged)"]
