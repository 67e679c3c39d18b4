"""The one place that keeps TensorFlow's C++ start-up chatter out of the service's logs."""

from __future__ import annotations

import os

# TensorFlow reads this when it is first imported: 2 hides its info and warning lines.
QUIET_TENSORFLOW_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}


def quiet_tensorflow() -> None:
    """Quiet TensorFlow in this process unless the environment already chose a level."""
    for name, value in QUIET_TENSORFLOW_ENV.items():
        os.environ.setdefault(name, value)
