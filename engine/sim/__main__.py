"""``python -m engine.sim [flags]``: the same as ``corpusforge serve-sim [flags]``."""

import sys

from ..cli import main

sys.exit(main(["serve-sim", *sys.argv[1:]]))
