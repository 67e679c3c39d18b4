"""The one place that keeps TensorFlow's C++ start-up chatter out of the service's logs."""

from __future__ import annotations

import os

# TensorFlow reads these when it is first imported. TF_CPP_MIN_LOG_LEVEL=2 hides its info and
# warning lines, but not the oneDNN notice: two of TensorFlow's libraries each log it (with absl's
# "All log messages before absl::InitializeLog()" line) before logging is set up, whatever the
# level. Without oneDNN's custom operations nothing is logged; they speed up large matrix
# products, not this model's 10-unit steps, and change results only by float round-off.
QUIET_TENSORFLOW_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}


def quiet_tensorflow() -> None:
    """Quiet TensorFlow in this process unless the environment already chose a level."""
    for name, value in QUIET_TENSORFLOW_ENV.items():
        os.environ.setdefault(name, value)
