"""The emulator's tuning of moto answers what moto's own functions answer."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

from stratus_tools.local.emulator import tune_moto


def test_tuned_clock_and_module_list_agree_with_moto() -> None:
    # given moto's service folders and the seconds of a fixed time, both worked out without moto's help
    import moto
    from moto import backends
    from moto.core import utils
    from moto.sqs import models as sqs_models

    package = Path(moto.__file__).parent
    modules = sorted(p.name for p in package.iterdir() if p.is_dir() and not p.name.startswith("__"))
    fixed = datetime.datetime(2024, 5, 6, 7, 8, 9, 500_000)
    expected_at_fixed = (fixed - datetime.datetime(1970, 1, 1)).total_seconds()

    # when moto is tuned (twice: it is idempotent)
    tune_moto()
    tune_moto()

    # then the module list is the same, and the clock gives the same seconds, now and for a given time
    assert list(backends.list_of_moto_modules()) == modules
    assert "s3" in modules
    assert "sqs" in modules
    assert "dynamodb" in modules
    for module in (utils, sqs_models):
        assert abs(module.unix_time() - time.time()) < 1.0
        assert abs(module.unix_time_millis() - time.time() * 1000) < 1000.0
        assert module.unix_time(fixed) == expected_at_fixed
        assert module.unix_time_millis(fixed) == expected_at_fixed * 1000.0
