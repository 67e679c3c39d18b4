"""Array types shared by training, serving and the benchmarks."""

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
