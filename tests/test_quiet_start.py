"""`python -m training --quiet` prints nothing but errors: not even TensorFlow's C++ start-up lines
(which ignore TF_CPP_MIN_LOG_LEVEL). The service's start-up is checked in test_run_script.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO


def test_training_quiet_prints_nothing(tmp_path: Path) -> None:
    # As a newcomer's shell has it: none of the variables that quiet TensorFlow set beforehand.
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")
    }
    result = subprocess.run(
        [sys.executable, "-m", "training", "--quiet", "--epochs", "50", "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0
    assert (result.stdout, result.stderr) == ("", "")
