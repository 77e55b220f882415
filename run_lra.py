#!/usr/bin/env python
"""Train one attention on one LRA task: the same as `lra train`.

    python run_lra.py                                   # smoke preset, ListOps, generated data
    python run_lra.py --task listops --attention softmax --preset paper --data-dir data
"""

import sys

from lra.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
