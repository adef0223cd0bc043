"""``python -m evaluators``: prepare the ONNX encoder export ahead of time (``make install`` runs it)."""

import sys

from .encoder import main

sys.exit(main())
