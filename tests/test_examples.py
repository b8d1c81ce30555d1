"""The examples run end to end."""

import pytest

from examples import quickstart


@pytest.mark.slow
def test_quickstart_runs_and_its_claims_hold(capsys):
    result = quickstart.main(image_size=32, density=(0.5, 0.3), seed=0)
    assert result["conversion_gap"] <= 1e-5
    assert result["strip_gap"] <= 1e-5
    counts = result["counts"]
    assert counts.clean == pytest.approx(0.5 * counts.total, rel=0.01)
    assert counts.adv == pytest.approx(0.3 * counts.total, rel=0.01)
    assert "non-zero kernel weights" in capsys.readouterr().out
