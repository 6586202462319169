"""The rounds report: each round's measures against the base model and the round before,
read from the evaluations as written, and the rounds params checked when they load."""

from __future__ import annotations

import pytest

from dlma.core.errors import DlmaError
from dlma.rounds.params import RoundsParams
from dlma.rounds.report import markdown, round_rows


def evaluation(gain: float, kl: float, net: float) -> dict:
    return {"sentiment": {"gain": {"difference": gain, "ci_low": gain - 0.1, "ci_high": gain + 0.1, "n": 10}},
            "win_rate": {"sentiment": {"net": net, "net_ci_low": net - 0.2, "net_ci_high": net + 0.2, "informative": True,
                                       "independent": True},
                         "self_contrast": {"net": 0.5, "net_ci_low": 0.1, "net_ci_high": 0.9, "informative": True,
                                           "independent": False}},
            "kl_to_base": {"mean": kl, "ci_low": kl - 0.5, "ci_high": kl + 0.5, "n": 10},
            "training_data": {"pairs": 128}}


def later(number: int, vs_base: dict, vs_previous: dict, active: bool = True) -> dict:
    return {"round": number, "active": active, "start": "previous", "reference": "base", "keep_pairs": False,
            "train": {"pairs": 128, "steps": 32}, "vs_base": vs_base, "vs_previous": vs_previous}


def test_rows_carry_each_rounds_numbers_against_base_and_previous():
    first = evaluation(0.16, 1.4, 0.3)
    rows = round_rows(first, [later(3, evaluation(0.25, 3.0, 0.5), evaluation(0.04, 3.0, 0.1)),
                              later(2, evaluation(0.21, 2.2, 0.4), evaluation(0.05, 2.2, 0.1)),
                              later(4, {}, {}, active=False)])
    assert [row["round"] for row in rows] == [1, 2, 3]  # in order; the round that did not run is left out
    assert rows[1]["vs_base"]["sentiment gain"] == {"mean": 0.21, "ci_low": pytest.approx(0.11), "ci_high": pytest.approx(0.31)}
    assert rows[2]["vs_previous"]["sentiment gain"]["mean"] == 0.04
    assert rows[1]["vs_base"]["KL to base (nats)"]["mean"] == 2.2
    assert "KL to base (nats)" not in rows[1]["vs_previous"]  # the KL is to the base model whatever the baseline
    assert "self_contrast net win (not a headline judge)" in rows[0]["vs_base"]  # the model judging itself
    assert rows[0]["vs_previous"] == {k: v for k, v in rows[0]["vs_base"].items() if not k.startswith("KL")}  # round 1's previous is the base
    text = markdown(rows, 3)
    assert "| 2 | 128 | 32 | +0.210 [+0.110, +0.310] |" in text and "| 3 | 128 | 32 | +0.040 [-0.060, +0.140] |" in text
    # Round 1's budget: the pairs and steps it trained on (its training report), not the pairs generated
    trained = round_rows(evaluation(0.16, 1.4, 0.3) | {"training_data": {"pairs": 240}}, [], {"pairs": 128, "steps": 32})
    assert (trained[0]["pairs"], trained[0]["steps"]) == (128, 32)


def test_one_round_says_how_to_run_more():
    text = markdown(round_rows(evaluation(0.1, 1.0, 0.2), [later(2, {}, {}, active=False)]), 1)
    assert "One round (rounds.count is 1)" in text and "rounds.count=3" in text


@pytest.mark.parametrize("values, message", [
    ({"count": 0}, "rounds.count must be >= 1"),
    ({"start": "scratch"}, "rounds.start"),
    ({"reference": "last"}, "rounds.reference"),
])
def test_bad_rounds_params_are_one_line(values, message):
    from tests.helpers import shipped

    with pytest.raises(DlmaError, match=message):
        shipped(RoundsParams, "rounds", **values)


def test_a_count_beyond_the_rounds_dvc_yaml_has_is_one_line(tmp_path, monkeypatch):
    import shutil

    import yaml
    from typer.testing import CliRunner

    from dlma.cli import app
    from tests.dvcrepo import REPO

    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / ".dvc").mkdir()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["rounds"]["count"] = 5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["round_plan", "--round", "2", "--out", "plan.json"])
    assert result.exit_code == 2 and "rounds.count is 5, but dvc.yaml has stages for 3 rounds" in result.output
    assert not (tmp_path / "plan.json").exists()
    params["rounds"]["count"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for number, active in ((2, True), (3, False)):
        assert CliRunner().invoke(app, ["round_plan", "--round", str(number), "--out", f"{number}.json"]).exit_code == 0
        assert yaml.safe_load((tmp_path / f"{number}.json").read_text()) == {"round": number, "active": active}
