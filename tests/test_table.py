import numpy as np

from amcore.evaluation.table import METRIC_ORDER, failures, long_table, markdown, summary


def _results():
    rows = []
    for seed, (a, b) in enumerate([(1.0, 2.0), (3.0, 4.0)]):
        rows.append({"method": "am", "holdout": "1", "seed": str(seed), "table": {"w1": a, "mmd": 0.1}})
        rows.append({"method": "am", "holdout": "2", "seed": str(seed), "table": {"w1": b, "mmd": 0.2}})
    rows.append({"method": "copy_prev", "holdout": "1", "seed": "", "table": {"w1": 5.0, "mmd": 0.5}})
    rows.append({"method": "copy_prev", "holdout": "2", "seed": "", "table": {"w1": 7.0, "mmd": 0.7}})
    return rows


def test_long_table_has_one_row_per_method_holdout_seed_metric():
    table = long_table(_results())
    assert list(table.columns) == ["method", "holdout", "seed", "metric", "value"]
    assert len(table) == 12 and table["metric"].iloc[0] == "w1"  # w1 first, whatever the input order


def test_mean_and_sample_std_over_seeds():
    cols = summary(long_table(_results()), "w1")
    np.testing.assert_array_equal(cols["am"]["1"], [1.0, 3.0])
    # The mean column: each seed's mean over held-out times (1.5 and 3.5), then mean ± std over seeds.
    np.testing.assert_array_equal(cols["am"]["mean"], [1.5, 3.5])
    np.testing.assert_array_equal(cols["copy_prev"]["mean"], [6.0])
    text = markdown(long_table(_results()))
    # Sample std of (1, 3) is sqrt(2) = 1.414; of (1.5, 3.5) also sqrt(2).
    assert "| am | 2 ± 1.4 | 3 ± 1.4 | 2.5 ± 1.4 |" in text
    assert "| copy_prev | 5 | 7 | 6 |" in text
    assert text.index("### w1") < text.index("### mmd")
    # The spread is the sample std (ddof 1) over seeds: with three seeds (1, 2, 6) it is sqrt(7) = 2.6, where the
    # population std (ddof 0) would be 2.2 and the standard error 1.5.
    rows = [{"method": "am", "holdout": "1", "seed": str(s), "table": {"w1": v}} for s, v in enumerate((1.0, 2.0, 6.0))]
    assert "| am | 3 ± 2.6 |" in markdown(long_table(rows))


def test_a_failed_seed_is_marked_never_averaged_away():
    """A prediction with NaN cells has NaN distances: the table says FAILED and no mean skips over it."""
    rows = _results()
    rows[3]["table"] = {"w1": float("nan"), "mmd": float("nan"), "nonfinite": 7}  # am, held-out 2, seed 1
    table = long_table(rows)
    cols = summary(table, "w1")
    assert np.isnan(cols["am"]["2"][1]) and np.isnan(cols["am"]["mean"][1]) and cols["am"]["mean"][0] == 1.5
    text = markdown(table)
    assert "| am | 2 ± 1.4 | FAILED (1 of 2 seeds) | FAILED (1 of 2 seeds) |" in text
    assert "**FAILED predictions**" in text and "- am, held-out 2, seed 1: 7 cells" in text
    assert failures(table)[["method", "holdout", "seed"]].values.tolist() == [["am", "2", "1"]]


def test_metrics_come_in_one_order_whatever_the_input_order():
    """The distances' stable names, in the order of table.METRIC_ORDER (exact W beside its noise first)."""
    names = ["energy", "escaped", "nonfinite", "sliced_w2", "mmd", "w1_subsample_noise", "sliced_w1", "w2", "w1"]
    rows = [{"method": "am", "holdout": "1", "seed": "0", "table": dict.fromkeys(names, 1.0)}]
    table = long_table(rows)
    assert list(table["metric"]) == list(METRIC_ORDER)
    text = markdown(table)
    assert [line[4:] for line in text.splitlines() if line.startswith("### ")] == list(METRIC_ORDER)
