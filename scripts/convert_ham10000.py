"""Convert HAM10000 dermoscopy images into ms-swift JSONL (generative and classification-head), split by lesion.

The code lives in `medswift.data.converters.ham10000` (scripts/medswift/); this file keeps the command at the
path the README and the reference system use. `--help` lists every flag.
For research only, not for diagnosis.
"""
import sys

from medswift.data.converters.ham10000 import main

if __name__ == "__main__":
    sys.exit(main())
