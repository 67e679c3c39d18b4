"""``python -m training``."""

import sys

from forecast_core.quiet_tensorflow import quiet_tensorflow

# TensorFlow's C++ start-up chatter is not for the person running the job.
quiet_tensorflow()

from training.cli import main  # noqa: E402

sys.exit(main())
