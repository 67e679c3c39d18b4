"""``python -m training``."""

import os
import sys

# TensorFlow's C++ start-up chatter is not for the person running the job.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from training.cli import main  # noqa: E402

sys.exit(main())
