import warnings

import numpy as np
import pytest

from amcore.evaluation.table import (
    METRIC_ORDER,
    beyond,
    failures,
    long_table,
    markdown,
    paired_differences,
    summary,
)


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


def test_a_failed_course_is_listed_and_its_method_marked_where_read():
    """Audit 68: a uAM whose push from the first time turned NaN (course_excess and course_mass_error NaN, which no
    threshold flags) topped the W1 table with no mark; a flag of the data (a time of few cells) marks no method."""
    rows = _results()
    rows[0]["table"] |= {"course_excess": float("nan"), "course_mass_error": float("nan")}  # am, held-out 1, seed 0
    text = markdown(long_table(rows))
    assert "**FAILED models** (the push from the first time ended in NaN or inf" in text
    assert text.count("- am, held-out 1, seed 0: NaN or inf") == 1
    assert "| am | 2 ± 1.4 ⚑ | 3 ± 1.4 | 2.5 ± 1.4 ⚑ |" in text and "| copy_prev | 5 | 7 | 6 |" in text
    rows = _results()
    rows[0]["table"] |= {"fewest_cells": 5}
    assert "⚑" not in markdown(long_table(rows))


def test_weights_resting_on_a_few_particles_are_flagged_in_the_table():
    """uAM's scored prediction whose weights rest on 4 % of its particles keeps its distances and is listed under a
    flag; 10 % and more is not (FEW_EFFECTIVE)."""
    rows = _results()
    rows[0]["table"]["effective_size"] = 0.04  # am, held-out 1, seed 0
    rows[1]["table"]["effective_size"] = 0.1
    text = markdown(long_table(rows))
    assert "weights resting on under 10% of the particles" in text
    assert "- am, held-out 1, seed 0: effective size 4.0% of the particles" in text
    assert "seed 1: effective size" not in text and "FAILED" not in text
    assert beyond(long_table(rows), "effective_size", below=0.1)["value"].tolist() == [0.04]


def test_a_time_of_few_cells_and_a_mass_far_off_are_flagged_in_the_table():
    """Distances to or from 5 cells (and their noise floor, from halves of 2) are mostly sampling noise; a uAM
    whose weighted mass is off by 1444 % at some time learned no growth. Both keep their numbers and are listed
    under a flag (FEW_CELLS = 20, MASS_OFF = 50 %); 20 cells and a 30 % error are not."""
    rows = _results()
    rows[0]["table"] |= {"fewest_cells": 5, "mass_rel_error": 14.44}  # am, held-out 1, seed 0
    rows[1]["table"] |= {"fewest_cells": 20, "mass_rel_error": 0.3}
    text = markdown(long_table(rows))
    assert "under 20 cells on one side" in text and "- am, held-out 1, seed 0: 5 cells" in text
    assert "mass off by more than 50% at some time" in text and "- am, held-out 1, seed 0: mass error 1444%" in text
    assert "seed 1: 20 cells" not in text and "seed 1: mass error" not in text
    rows[1]["table"] |= {"coinciding": 1}
    assert "- am, held-out 2, seed 0: observed cells at one point" in markdown(long_table(rows))


def test_metrics_come_in_one_order_whatever_the_input_order():
    """The distances' stable names, in the order of table.METRIC_ORDER (the errors against a known truth, then
    exact W beside its noise)."""
    names = ["energy", "escaped", "effective_size", "nonfinite", "sliced_w2", "mmd", "w1_subsample_noise", "sliced_w1"]
    names += [
        "mass_rel_error",
        "w2",
        "course_escaped",
        "fewest_cells",
        "neighbour_excess",
        "course_excess",
        "w1",
        "coinciding",
        "course_mass_error",
        "growth_rel_error",
        "velocity_rel_error",
        "drift_rel_error",
        "predicted_cells",
        "observed_growth",
        "predicted_growth",
    ]
    rows = [{"method": "am", "holdout": "1", "seed": "0", "table": dict.fromkeys(names, 1.0)}]
    table = long_table(rows)
    assert list(table["metric"]) == list(METRIC_ORDER)
    text = markdown(table)
    assert [line[4:] for line in text.splitlines() if line.startswith("### ")] == list(METRIC_ORDER)


def test_paired_differences_by_seed_with_a_t_interval():
    """AM minus a peer on the same seed: seeds (0, 1, 2) with AM 1, 2, 6 and the peer 2, 2, 5 differ by (-1, 0, 1):
    mean 0, sample std 1, half-width t(0.975, 2) / sqrt(3) = 4.303 / 1.732 = 2.484. Against a deterministic
    baseline (3): -2, -1, 3, mean 0, std sqrt(7), half-width 6.572. The pairing matters: unpaired, AM and the
    peer would not even have the same mean spread."""
    rows = []
    for seed, (a, b) in enumerate([(1.0, 2.0), (2.0, 2.0), (6.0, 5.0)]):
        rows.append({"method": "am", "holdout": "1", "seed": str(seed), "table": {"w1": a}})
        rows.append({"method": "fm", "holdout": "1", "seed": str(seed), "table": {"w1": b}})
    rows.append({"method": "copy_prev", "holdout": "1", "seed": "", "table": {"w1": 3.0}})
    table = long_table(rows)
    pairs = paired_differences(table)
    mean, low, high, n, _ = pairs["fm"]["1"]
    assert n == 3 and mean == 0 and np.isclose(high, 2.484, atol=1e-3) and np.isclose(low, -high)
    mean, low, high, n, _ = pairs["copy_prev"]["1"]
    assert n == 3 and mean == 0 and np.isclose(high, 6.572, atol=1e-3)
    assert "### am − peer, w1, paired by seed" in markdown(table)
    assert "| fm | +0.00 [-2.48, +2.48] |" in markdown(table)
    assert paired_differences(long_table(rows[:2])) == {}, "one seed: no interval"
    one_shared = long_table([*rows[:2], rows[2]])  # the reference on seeds 0 and 1, the peer on seed 0 only
    assert "| fm | -1 (1 seed: no interval) |" in markdown(one_shared)


def test_paired_differences_over_held_out_times_and_a_failed_seed():
    """The ``mean`` column pairs each seed's mean over held-out times; a NaN (failed) seed makes its pair NaN, shown
    as FAILED, never an interval over the seeds that are left."""
    table = long_table(_results())  # am: seed 0 (1, 2), seed 1 (3, 4); copy_prev (5, 7)
    pairs = paired_differences(table)
    assert pairs["copy_prev"]["mean"][0] == ((1.5 - 6) + (3.5 - 6)) / 2
    rows = _results()
    rows[3]["table"] = {"w1": float("nan")}
    pairs = paired_differences(long_table(rows))
    assert np.isnan(pairs["copy_prev"]["2"][0]) and np.isnan(pairs["copy_prev"]["mean"][0])
    assert "FAILED" in markdown(long_table(rows)).split("paired by seed")[1]


def test_one_summary_across_datasets_from_the_table_files(tmp_path, capsys):
    """`amcore summary` reads each experiment's table.csv as the pipeline writes it (a failed seed's NaN empty) and
    names each dataset by its folder."""
    from amcore.cli import main

    rows = _results()
    for seed, value in enumerate((0.5, 0.7)):
        rows.append({"method": "am", "holdout": "1", "seed": str(seed), "table": {"w1_subsample_noise": value}})
    paths = []
    for name, table in (("eb_leaveout", long_table(rows)), ("tigon", long_table(_results()))):
        (tmp_path / name).mkdir()
        table.to_csv(tmp_path / name / "table.csv", index=False)
        paths.append(str(tmp_path / name / "table.csv"))
    assert main(["summary", *paths, "--out", str(tmp_path / "summary.md")]) == 0
    text = (tmp_path / "summary.md").read_text()
    assert "| method | eb_leaveout | tigon |" in text
    assert "| am | 2.5 ± 1.4 | 2.5 ± 1.4 |" in text and "| copy_prev | 6 | 6 |" in text
    assert "| *noise floor* (`w1_subsample_noise`, the reference's) | 0.6 | — |" in text
    assert "| copy_prev | -3.5 [-16.2, +9.2] | -3.5 [-16.2, +9.2] |" in text  # diffs -4.5, -2.5: t(1) = 12.71
    assert "Failed and flagged" not in text  # nothing to say
    assert "nothing to pair" not in text
    assert main(["summary", *paths, "--metric", "mmd", "--out", str(tmp_path / "mmd.md")]) == 0
    assert "noise floor" not in (tmp_path / "mmd.md").read_text()  # a W1 beside MMD values reads as their scale
    assert "This metric's intervals hold the training seeds' spread only" in (tmp_path / "mmd.md").read_text()
    flagged = _results()
    flagged[0]["table"] |= {"fewest_cells": 5, "escaped": 3}  # what a mean hides is said before the means
    long_table(flagged).to_csv(tmp_path / "tigon" / "table.csv", index=False)
    assert main(["summary", *paths, "--out", str(tmp_path / "summary.md")]) == 0
    text = (tmp_path / "summary.md").read_text()
    assert "- tigon: 1 with escaped cells (am), 1 on under 20 cells (am) (listed in its table.md)" in text
    assert "| am | 2.5 ± 1.4 | 2.5 ± 1.4 ⚑ |" in text  # audit 68: the flagged method is marked where it is read
    # audit 95: the legend stood between the header and the rows, and markdown read the rows as plain text
    assert "|---|---|---|\n| am | 2.5 ± 1.4 | 2.5 ± 1.4 ⚑ |" in text and text.index("⚑:") < text.index("| method |")
    assert "eb_leaveout:" not in text
    # each dataset's own rule may choose the reference (uam where counts change): the pairs are taken against it
    rows = _results()
    for seed, value in enumerate((1.0, 2.0)):  # seed means 1 and 2: am - uam = 0.5, 1.5, uam - copy_prev = -5, -4
        rows += [{"method": "uam", "holdout": h, "seed": str(seed), "table": {"w1": value}} for h in ("1", "2")]
    long_table(rows).to_csv(tmp_path / "tigon" / "table.csv", index=False)
    assert main(["summary", *paths, "--reference", "tigon=uam", "--out", str(tmp_path / "summary.md")]) == 0
    text = (tmp_path / "summary.md").read_text()
    assert "| method | eb_leaveout (− am) | tigon (− uam) |" in text
    assert "| am | reference | -1.00 [-7.35, +5.35] |" in text  # sd 0.707, se 0.5, t(1) = 12.71
    assert "| copy_prev | -3.5 [-16.2, +9.2] | -4.5 [-10.9, +1.9] |" in text
    assert "| uam | — | reference |" in text
    one_seed = long_table([r for r in _results() if r["seed"] in ("", "0")])
    one_seed.to_csv(tmp_path / "tigon" / "table.csv", index=False)
    assert main(["summary", *paths, "--out", str(tmp_path / "summary.md")]) == 0
    text = (tmp_path / "summary.md").read_text()
    assert "- tigon: nothing to pair (1 seed of am; pairs need two or more)." in text
    assert main(["summary", *paths, "--reference", "emt=uam"]) == 2
    assert "no table of experiment 'emt'" in capsys.readouterr().err
    assert main(["summary", str(tmp_path / "missing" / "table.csv")]) == 2
    assert "no such table" in capsys.readouterr().err


def _outputs(tmp_path) -> list[str]:
    """`amcore table`'s output arguments, into ``tmp_path``."""
    return ["--table", str(tmp_path / "t.csv"), "--markdown", str(tmp_path / "t.md"), "--figure",
            str(tmp_path / "t.png")]  # fmt: skip


def test_a_model_that_runs_the_whole_course_off_is_flagged_beside_its_held_out_rows(tmp_path):
    """Score's push from the first time flags the held-out row of each model and seed: an excess above 1 noise floor
    (farther from the last time than not moving), cells that left the data, a course's mass off."""
    import json

    from amcore.cli import main

    flags = {"course_excess": 2.5, "course_escaped": 3}
    rows = [{"method": "am", "holdout": "1", "seed": "0", "table": {"w1": 1.0, "nonfinite": 0, **flags}},
            {"method": "am", "holdout": "1", "seed": "1", "table": {"w1": 1.0, "nonfinite": 0, "course_excess": 0.2,
                                                                   "course_escaped": 0}},
            {"method": "copy_prev", "holdout": "1", "seed": "", "table": {"w1": 2.0, "nonfinite": 0}}]  # fmt: skip
    (tmp_path / "scores.json").write_text(json.dumps({"results": rows}))
    out = _outputs(tmp_path)
    assert main(["table", "--results", str(tmp_path / "scores.json"), *out]) == 0
    text = (tmp_path / "t.md").read_text()
    assert "end farther from the last time's than the first time's cells unmoved" in text
    assert "- am, held-out 1, seed 0: 2.5 noise floors farther" in text and "- am, held-out 1, seed 0: 3 cells" in text
    assert "seed 1" not in text.split("### ")[0]  # the other seed ran the course well
    assert "course_mass_error" not in text  # unweighted: no mass to be off
    # Audit 18: uAM pushed from the first time with 67 % too much mass; the held-out row said 1-4 %, nothing flagged.
    rows[0]["table"]["course_mass_error"] = 0.67
    (tmp_path / "scores.json").write_text(json.dumps({"results": rows}))
    assert main(["table", "--results", str(tmp_path / "scores.json"), *out]) == 0
    assert "- am, held-out 1, seed 0: mass error 67%" in (tmp_path / "t.md").read_text()


def test_a_run_without_held_out_time_names_what_each_column_is():
    """Distances are means over the observed times; the flags are the worst time (audit 8: effective_size and
    mass_rel_error were headed "mean over observed times")."""
    rows = [{"method": "uam", "holdout": "none", "seed": "0",
             "table": {"w1": 1.0, "effective_size": 0.08, "mass_rel_error": 0.16, "course_excess": -1.0}}]  # fmt: skip
    text = markdown(long_table(rows))
    headings = {"w1": "mean over observed times", "effective_size": "lowest at an observed time",
                "mass_rel_error": "highest at an observed time", "course_excess": "first to last time"}  # fmt: skip
    for metric, heading in headings.items():
        section = text.split(f"### {metric}\n")[1]
        assert section.splitlines()[1] == f"| method | {heading} (none held out) |"


def test_an_action_ratio_that_measures_sampling_noise_is_flagged():
    """action_ratio 0.29 with the snapshots' noise 73 % of the geodesic action (audit 10) read as a flow below the
    least any flow can spend; the table flags it (over 50 %), not at 30 %."""
    rows = _results()
    rows[0]["table"] |= {"action_ratio": 0.29, "action_noise": 0.73}
    rows[1]["table"] |= {"action_ratio": 1.1, "action_noise": 0.3}
    text = markdown(long_table(rows))
    assert "**Flagged action ratios** (the snapshots' sampling noise is over 50% of the geodesic action" in text
    assert "- am, held-out 1, seed 0: action_noise 0.73" in text and "action_noise 0.30" not in text


def test_a_balanced_flow_spending_less_than_the_snapshots_need_is_flagged():
    """action_ratio 0.785 with noise 0.054 (audit 12, TIGON EMT at 500 steps) read as a plain number under the
    least any flow through the snapshots spends. Flagged below 0.9 (1 - 2 noise): 0.785 < 0.803; 0.87 with noise
    0.05 (0.81) is not, nor 0.29 whose noise (0.73) already makes the ratio uninformative."""
    rows = _results()
    rows[0]["table"] |= {"action_ratio": 0.785, "action_noise": 0.054}
    rows[1]["table"] |= {"action_ratio": 0.87, "action_noise": 0.05}
    rows[2]["table"] |= {"action_ratio": 0.29, "action_noise": 0.73}
    text = markdown(long_table(rows))
    heading = "**Flagged action ratios** (under 90% of the W2 geodesic's action less twice"
    section = text.split(heading)[1].split("###")[0]
    assert "action_ratio 0.79" in section and "0.87" not in section and "0.29" not in section


def test_paired_intervals_hold_the_held_out_cells_sampling_where_score_wrote_it():
    """Seeds differ by (-1, 0, 1): the seeds' half-width is 2.484 (t(0.975, 2) / sqrt(3)). Score's variance of the
    difference over the held-out cells, 0.25, adds 1.96 * 0.5 = 0.980 in quadrature: 2.670. Over two held-out times
    (variances 0.25 and 0.09) the mean's is (0.25 + 0.09) / 4. Another metric, or a table without those rows,
    keeps the seeds' interval, and says so."""
    rows = []
    for seed, (a, b) in enumerate([(1.0, 2.0), (2.0, 2.0), (6.0, 5.0)]):
        for holdout in ("1", "2"):
            rows.append({"method": "am", "holdout": holdout, "seed": str(seed), "table": {"w1": a, "mmd": a}})
            rows.append({"method": "fm", "holdout": holdout, "seed": str(seed), "table": {"w1": b, "mmd": b}})
    variances = [{"holdout": "1", "method": "am", "peer": "fm", "w1": 0.25},
                 {"holdout": "2", "method": "am", "peer": "fm", "w1": 0.09},
                 {"holdout": "1", "method": "fm", "peer": "am", "w1": 0.25}]  # fmt: skip
    table = long_table(rows, variances)
    pairs = paired_differences(table)["fm"]
    assert pairs["1"][2] == pytest.approx(np.hypot(2.4841, 1.95996 * 0.5), abs=1e-3)
    assert pairs["2"][2] == pytest.approx(np.hypot(2.4841, 1.95996 * 0.3), abs=1e-3)
    assert pairs["mean"][2] == pytest.approx(np.hypot(2.4841, 1.95996 * np.sqrt(0.34 / 4)), abs=1e-3)
    assert paired_differences(table, "mmd")["fm"]["1"][2] == pytest.approx(2.4841, abs=1e-3)
    text = markdown(table)
    assert "sampling of the held-out cells" in text and "w1_held_out_var" not in text.split("paired by seed")[1]
    assert "### w1_held_out_var" not in text
    assert "spread only" in markdown(long_table(rows))
    assert "written by an amcore before" in markdown(long_table(rows))
    # a held-out time without the cells' variance (scored by an older amcore) keeps it at the other time, and is
    # never counted as 0 in the mean's (audit 22; review: dropping it everywhere lost t = 1's)
    partial = paired_differences(long_table(rows, variances[:1]))["fm"]
    assert partial["1"][2] == pytest.approx(pairs["1"][2]) and partial["1"][4]
    assert partial["2"][2] == pytest.approx(2.4841, abs=1e-3) and not partial["2"][4]
    assert partial["mean"][2] == pytest.approx(2.4841, abs=1e-3) and not partial["mean"][4]
    text = markdown(long_table(rows, variances[:1]))
    assert "[-2.48, +2.48] (seeds only)" in text and "An interval marked (seeds only)" in text
    assert "(seeds only)" not in text.split("t = 1 |")[-1].split("|")[2]  # t = 1's interval holds the cells


def test_a_simulated_growing_population_evaluates_into_a_table(tmp_path):
    """Review of audit 26's change: the table took every ``*_rel_error`` of evaluate's result, uAM's per-time
    ``mass_rel_error`` dict with them, and `amcore table` failed on growth_uam.yaml. A real chain of the CLI: the
    truth's errors in the table, the mass error the worst time's number."""
    import json

    import pandas as pd

    from amcore.cli import main

    dataset = {"source": "simulate", "simulator": "growing_gaussian", "params": {"dim": 2}, "times": [0, 0.5, 1],
               "n_per_time": 150, "seed": 0}  # fmt: skip
    store, run = tmp_path / "s.zarr", tmp_path / "run"
    assert main(["prepare", "--dataset", json.dumps(dataset), "--out", str(store), "--summary",
                 str(tmp_path / "s.json")]) == 0  # fmt: skip
    params = {"objective": "uam", "steps": 30, "width": 16, "depth": 2, "log_every": 10}
    assert main(["train", "--store", str(store), "--params", json.dumps(params), "--checkpoint", str(run / "m.pt"),
                 "--loss-csv", str(run / "loss.csv")]) == 0  # fmt: skip
    assert main(["integrate", "--store", str(store), "--checkpoint", str(run / "m.pt"), "--params",
                 '{"steps_per_interval": 4}', "--out", str(run / "t.zarr")]) == 0  # fmt: skip
    assert main(["evaluate", "--model", "uam", "--seed", "0", "--store", str(store), "--checkpoint",
                 str(run / "m.pt"), "--trajectories", str(run / "t.zarr"), "--loss-csv", str(run / "loss.csv"),
                 "--params", '{"truth_samples": 300}', "--metrics", str(run / "metrics.json"), "--plots",
                 str(run / "plots")]) == 0  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["table"]["mass_rel_error"] == metrics["mass_rel_error_max"]
    out = _outputs(tmp_path)
    assert main(["table", "--results", str(run / "metrics.json"), *out]) == 0
    rows = pd.read_csv(tmp_path / "t.csv").set_index("metric")["value"]
    assert list(rows.index[:2]) == ["velocity_rel_error", "growth_rel_error"]
    assert rows["growth_rel_error"] == pytest.approx(metrics["growth_rel_error"], rel=1e-12)


def test_the_tables_glossary_says_only_what_the_table_holds():
    """Audit 33: one seed, no baselines, no held-out time, and the preamble spoke of baselines, weighted particles
    and prediction sizes; a held-out table with them says them."""
    alone = markdown(long_table([{"method": "am", "holdout": "none", "seed": "0", "table": {"w1": 0.1, "mmd": 1e-4}}]))
    glossary = alone.split("### ")[0]
    assert "`w1`, `w2`: exact OT" in glossary and "`mmd` (squared, unbiased" in glossary
    for absent in ("baselines", "effective_size", "predicted_cells", "velocity_rel_error", "course_excess"):
        assert absent not in glossary, absent
    rows = [
        {"method": "am", "holdout": "1", "seed": "0", "table": {"w1": 0.1, "predicted_cells": 300}},
        {"method": "copy_prev", "holdout": "1", "seed": "", "table": {"w1": 0.3, "predicted_cells": 300}},
    ]
    glossary = markdown(long_table(rows)).split("### ")[0]
    assert "(baselines are deterministic: one value)" in glossary and "`predicted_cells` (a count" in glossary


def test_a_relative_error_far_off_prints_in_three_digits():
    """Audit 55: a mass 1.8e19 times off printed as a 22-digit percentage."""
    from amcore.evaluation.evaluate import percent

    assert (percent(0.674), percent(14.44), percent(1.774e19)) == ("67%", "1444%", "1.77e+21%")


def test_a_shared_noise_floor_reads_as_one_draw_and_other_metrics_intervals_say_seeds_alone():
    """Audit 61: the floor, one split the seeds share, read "0.2858 ± 0" (redrawn splits moved it by 20 %); a
    summary of sliced_w1 printed "[95 % interval]" as W1's, which holds the held-out cells' sampling too; and one
    interval read "+0.0866 [+0.0328, +0.14]", three precisions."""
    from amcore.evaluation.table import _interval_cell, across_datasets

    rows = _results()
    for seed in ("0", "1"):
        rows.append({"method": "am", "holdout": "1", "seed": seed, "table": {"w1_subsample_noise": 0.2858}})
        rows[-1]["table"]["sliced_w1"] = 0.5 + int(seed)
        rows.append({"method": "fm", "holdout": "1", "seed": seed, "table": {"sliced_w1": 0.6 + 2 * int(seed)}})
    table = long_table(rows)
    assert "| am | 0.2858 (one draw) |" in markdown(table)
    assert "paired by seed: mean [95 % interval of the seeds' spread alone]" in across_datasets(
        {"d": table}, "sliced_w1"
    )
    assert "paired by seed: mean [95 % interval]" in across_datasets({"d": table}, "w1")
    assert _interval_cell((0.0866, 0.0328, 0.14, 3, True)) == "+0.087 [+0.033, +0.140]"
    one_seed = long_table([r for r in rows if r["seed"] in ("0", "")])
    assert "No paired differences: 1 seed of am; pairs need two or more." in markdown(one_seed)


def test_an_interval_of_infinities_or_tiny_numbers_is_still_written():
    """Review 63: an inf seed (a mass error can be one) raised OverflowError and took the table with it; a mean
    that rounds to zero read -0.000; numbers of 1e-12 read as zeros."""
    from amcore.evaluation.table import _interval_cell

    assert _interval_cell((np.inf, -np.inf, np.nan, 3, True)) == "+inf [-inf, +nan]"
    assert _interval_cell((-0.0004, -0.5, 0.5, 3, True)) == "+0.000 [-0.500, +0.500]"
    assert _interval_cell((1e-12, -2e-12, 3e-12, 3, True)) == "+1e-12 [-2e-12, +3e-12]"


def test_held_out_times_are_headed_as_the_other_outputs_print_them():
    """Audit 76: a held-out time of 1/48 day headed its column ``t = 0.020833333333333332`` where metrics.json and the
    logs said 0.0208333; two times that would print alike keep their digits, and the table's rows keep them all."""
    from amcore.evaluation.table import held_label

    rows = [{**r, "holdout": {"1": "0.020833333333333332", "2": "0.5"}[r["holdout"]]} for r in _results()]
    table = long_table(rows)
    text = markdown(table)
    assert "| method | t = 0.0208333 | t = 0.5 | mean |" in text and "0.020833333333333332" not in text
    assert set(table["holdout"]) == {"0.020833333333333332", "0.5"}
    alike = ["0.1234567", "0.12345671", "none"]
    assert [held_label(h, alike) for h in alike] == alike


def test_a_held_out_time_whose_noise_floor_reaches_copying_the_previous_cells_is_named():
    """Audit 90: heavy tails in 6-d put the noise floor (3.7) above copy_prev's W1 (2.96): W1 told no prediction
    from none, and the table said nothing. Held-out 1 here (floor 5.5 against copy_prev 5) is named; held-out 2
    (floor 1 against 7) is not."""
    rows = _results()
    for row in rows:
        row["table"]["w1_subsample_noise"] = 5.5 if row["holdout"] == "1" else 1.0
    text = markdown(long_table(rows))
    assert "**W1 cannot separate the methods** at t = 1 (5.5 against 5):" in text
    assert "t = 2" not in text.split("W1 cannot separate")[1].split("\n")[0]
    assert "W1 cannot separate" not in markdown(long_table(_results()))  # no floor, nothing said
    for row in rows:  # floors that are NaN say nothing, and no mean of an empty slice is taken
        row["table"]["w1_subsample_noise"] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "W1 cannot separate" not in markdown(long_table(rows))


def test_a_held_out_time_where_w1_and_sliced_w1_put_different_methods_first_is_named():
    """Audit 94: on EB in 50 PCs W1 put displacement interpolation first at every held-out time while sliced W1,
    energy and MMD put AM first, and the table said nothing. Held-out 1 here (W1 favours the displacement, sliced W1
    AM) is named; held-out 2 (both favour AM) is not; a failed seed takes its method out of the comparison."""
    rows = []
    for seed, (w1, sliced) in enumerate([(2.0, 0.10), (2.2, 0.12)]):
        rows.append({"method": "am", "holdout": "1", "seed": str(seed), "table": {"w1": w1, "sliced_w1": sliced}})
        rows.append({"method": "am", "holdout": "2", "seed": str(seed), "table": {"w1": 1.0, "sliced_w1": 0.05}})
    for holdout, w1, sliced in (("1", 1.8, 0.15), ("2", 1.5, 0.09)):
        rows.append({"method": "ot_displacement", "holdout": holdout, "seed": "", "table": {"w1": w1,
                     "sliced_w1": sliced}})  # fmt: skip
    text = markdown(long_table(rows))
    line = next(line for line in text.splitlines() if line.startswith("**W1 and sliced W1"))
    assert "t = 1: W1 ot_displacement (1.8 against 2.1), sliced W1 am (0.11 against 0.15)" in line
    assert "t = 2" not in line
    assert "W1 and sliced W1" not in markdown(long_table(_results()))  # no sliced W1, nothing said
    close = [{**r, "table": {"w1": 2.09, "sliced_w1": 0.15}} if r["method"] == "ot_displacement" and
             r["holdout"] == "1" else r for r in rows]  # fmt: skip
    assert "W1 and sliced W1" not in markdown(long_table(close))  # 0.5 % apart in W1: the seeds' spread, no order
    rows[0]["table"] = {"w1": float("nan"), "sliced_w1": float("nan"), "nonfinite": 3}  # am fails at 1: one left
    assert "W1 and sliced W1" not in markdown(long_table(rows))


def test_the_chosen_section_is_left_out_where_no_setting_it_lists_chose():
    """Audit 95: a choice of a setting the section does not list gave its header and no rows."""
    from amcore.evaluation.table import chosen_lines

    assert chosen_lines([{"method": "am", "holdout": "1", "seed": "0", "chosen": {"unlisted": 1}}]) == []
    lines = chosen_lines([{"method": "am", "holdout": "1", "seed": "0", "chosen": {"stride": 2, "unlisted": 1}}])
    assert lines[0].startswith("### Chosen") and "| am | stride | 2 (seed 0) |" in lines and len(lines) == 6
