import sys

from distill.tune.cli import main

sys.exit(main())
