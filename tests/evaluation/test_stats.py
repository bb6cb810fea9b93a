import pytest

from flexwm.evaluation.stats import mmrv, pearson, success_summary, wilson_interval


def test_wilson_known_values():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-3)
    assert success_summary([True, False, True, True])["rate"] == 0.75


def test_mmrv_zero_for_same_ranking_and_positive_otherwise():
    real = [0.1, 0.5, 0.9]
    assert mmrv(real, [0.2, 0.4, 0.8]) == 0.0
    # swapping the two best policies costs |0.9 - 0.5| for each of them
    assert mmrv(real, [0.2, 0.8, 0.4]) == pytest.approx((0 + 0.4 + 0.4) / 3)
    assert pearson(real, [0.2, 0.4, 0.8]) > 0.95
