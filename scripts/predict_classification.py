"""Predict ChestX-ray14 / HAM10000 labels with a classification head or a generative adapter.

The code lives in `medswift.infer.classify` (scripts/medswift/); this file keeps the command at the
path the README and the reference system use. `--help` lists every flag.
For research only, not for diagnosis.
"""
import sys

from medswift.infer.classify import main

if __name__ == "__main__":
    sys.exit(main())
