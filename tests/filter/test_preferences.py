from __future__ import annotations

import math

import polars as pl
import pytest

from dlma.core.errors import DlmaError
from dlma.filter.params import FilterParams
from dlma.filter.preferences import build_preferences
from tests.helpers import shipped


def scored() -> pl.DataFrame:
    return pl.DataFrame({
        "id": ["a", "b", "c", "d", "e"],
        "prompt": ["q1", "q2", "q3", "word " * 700, "q5"],
        "response_pos": ["good", "", "same", "x", "fine"],
        "response_neg": ["bad", "meh", "same", "y", "worse"],
        "finish_pos": ["eos", "eos", "eos", "eos", "length"],
        "finish_neg": ["eos", "eos", "eos", "eos", "eos"],
        "score": [3.0, -2.0, 0.5, 1.0, -7.0],
        "ref_logp_pos": [-1.0, -2.0, -3.0, -4.0, -5.0],
        "ref_logp_neg": [-10.0, -20.0, -30.0, -40.0, -50.0],
        "tokens_pos": [[1, 0], [0], [3, 0], [4, 0], [5, 5]],  # 0 = EOS, absent where cut (length)
        "tokens_neg": [[6, 0], [7, 0], [3, 0], [8, 0], [9, 0]],
    })


def test_default_is_the_paper():
    prefs, report = build_preferences(scored(), shipped(FilterParams, "filter", drop_truncated="none"))
    # Only the >600-word prompt goes; negative scores keep chosen = the p+ sample.
    assert prefs["id"].to_list() == ["a", "b", "c", "e"]
    assert prefs["chosen"].to_list() == ["good", "", "same", "fine"]
    assert prefs["margin"].to_list() == [3.0, -2.0, 0.5, -7.0]
    assert prefs["ref_logp_chosen"].to_list() == [-1.0, -2.0, -3.0, -5.0]
    assert report["dropped"] == {"long_prompt": 1} and report["swapped"] == 0
    assert prefs.columns == ["id", "prompt", "chosen", "rejected", "margin", "ref_logp_chosen", "ref_logp_rejected",
                             "chosen_ids", "rejected_ids", "chosen_complete", "rejected_complete"]
    assert prefs["chosen_ids"].to_list() == [[1, 0], [0], [3, 0], [5, 5]]
    assert prefs["chosen_complete"].to_list() == [True, True, True, False]
    assert report["complete_pairs_share"] == 0.75


def test_truncated_pairs_by_how_many_answers_were_cut():
    table = scored().with_columns(pl.Series("finish_pos", ["eos", "length", "eos", "eos", "length"]),
                                  pl.Series("finish_neg", ["eos", "length", "length", "eos", "eos"]),
                                  pl.Series("tokens_pos", [[1, 0], [2], [3, 0], [4, 0], [5, 5]]))
    kept = {}
    for rule in ("none", "both", "either"):
        prefs, report = build_preferences(table, shipped(FilterParams, "filter", drop_truncated=rule))
        kept[rule] = prefs["id"].to_list()
        answers = prefs["chosen_complete"].to_list() + prefs["rejected_complete"].to_list()
        assert report["complete_answers_share"] == sum(answers) / len(answers)
    assert kept == {"none": ["a", "b", "c", "e"], "both": ["a", "c", "e"], "either": ["a"]}  # d: over 600 words


def test_every_option_counts_its_rows():
    params = shipped(FilterParams, "filter", drop_empty=True, drop_identical=True, drop_truncated="either", swap_negative=True, min_abs_score=0.0)
    prefs, report = build_preferences(scored(), params)
    assert report["dropped"] == {"long_prompt": 1, "empty_response": 1, "identical_responses": 1, "truncated_response": 1}
    assert prefs["id"].to_list() == ["a"] and report["rows_out"] == 1


def test_swap_negates_margin_and_swaps_references():
    prefs, report = build_preferences(scored(), shipped(FilterParams, "filter", swap_negative=True, max_prompt_words=None))
    row = prefs.filter(pl.col("id") == "e").row(0, named=True)
    assert (row["chosen"], row["rejected"], row["margin"]) == ("worse", "fine", 7.0)
    assert (row["ref_logp_chosen"], row["ref_logp_rejected"]) == (-50.0, -5.0)
    assert (row["chosen_ids"], row["rejected_ids"]) == ([9, 0], [5, 5])
    assert (row["chosen_complete"], row["rejected_complete"]) == (True, False)
    assert report["swapped"] == 2 and (prefs["margin"] >= 0).all()


def test_threshold():
    prefs, report = build_preferences(scored(), shipped(FilterParams, "filter", min_abs_score=1.5, max_prompt_words=None))
    assert prefs["id"].to_list() == ["a", "b", "e"] and report["dropped"] == {"both_truncated": 0, "low_abs_score": 2}


def test_bad_inputs():
    with pytest.raises(DlmaError, match=r"lacks column\(s\) \['score'\]"):
        build_preferences(scored().drop("score"), shipped(FilterParams, "filter"))
    with pytest.raises(DlmaError, match="no rows"):
        build_preferences(scored().head(0), shipped(FilterParams, "filter"))
    nan = scored().with_columns(pl.Series("score", [1.0, math.nan, 1.0, 1.0, 1.0]))
    with pytest.raises(DlmaError, match=r"field 'score' is NaN in row id='b'"):
        build_preferences(nan, shipped(FilterParams, "filter"))
    with pytest.raises(DlmaError, match="dropped every row"):
        build_preferences(scored(), shipped(FilterParams, "filter", min_abs_score=100.0))


def test_pairs_a_judge_could_not_label_are_dropped_and_counted():
    # RLAIF: the ab_judge labeller marks pairs whose pick flips with the order.
    table = scored().with_columns(pl.Series("labelled", [True, False, True, True, True]),
                                  pl.Series("score", [1.0, 0.0, -1.0, 1.0, -1.0]))
    prefs, report = build_preferences(table, shipped(FilterParams, "filter", swap_negative=True))
    assert prefs["id"].to_list() == ["a", "c", "e"]  # b unlabelled, d over 600 words
    assert report["dropped"]["unlabelled"] == 1 and report["swapped"] == 2
    assert prefs["chosen"].to_list() == ["good", "same", "worse"] and prefs["margin"].to_list() == [1.0, 1.0, 1.0]
