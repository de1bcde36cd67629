"""The reading of the control-group test shown on the Dashboard, table-driven."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from behavemail_core.funnel import holdout_verdict


@pytest.mark.parametrize(("p_value", "interval", "enough", "expected"), [
    # the test and the interval agree, with enough users
    (0.01, (2.0, 20.0), True, "significant at 5 %"),
    # the pooled test says yes but the interval includes zero
    (0.048, (-5.1, 36.7), True, "borderline: the interval still includes no lift"),
    # too few users: no verdict, whatever p says
    (0.048, (-5.1, 36.7), False, "too few users to judge"),
    # clearly no effect
    (0.45, (-10.0, 20.0), True, "not significant at 5 %"),
])
def test_holdout_verdict(p_value, interval, enough, expected) -> None:
    comparison = SimpleNamespace(p_value=p_value, confidence_interval_points=interval, enough_data=enough)

    assert holdout_verdict(comparison) == expected
