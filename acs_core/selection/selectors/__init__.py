"""Every registered selector, one file each; importing a file registers it (adding a selector: a file and a line here)."""
from . import craig, full, gradmatch, random  # noqa: F401  (ACS and the baselines)
from . import cal, contextual_diversity, deepfool, easycore, el2n, facility_location, forgetting  # noqa: F401  (the zoo)
from . import glister, grand, graphcut, herding, kcenter, log_determinant, moderate_ds, uncertainty  # noqa: F401
