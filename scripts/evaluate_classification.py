"""Report card for the classification jobs: per-class P/R/F1, AUROC, confusion, tuned thresholds.

The code lives in `medswift.eval.classification` (scripts/medswift/); this file keeps the command at the
path the README and the reference system use. `--help` lists every flag.
For research only, not for diagnosis.
"""
import sys

from medswift.eval.classification import main

if __name__ == "__main__":
    sys.exit(main())
