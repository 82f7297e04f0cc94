"""``python -m distill`` is ``python -m distill.train``."""

import sys

from distill.train import main

sys.exit(main())
