"""Convert captioned medical images (CT slices, MedTrinity-style) into ms-swift JSONL.

The code lives in `medswift.data.converters.captions` (scripts/medswift/); this file keeps the command at the
path the README and the reference system use. `--help` lists every flag.
For research only, not for diagnosis.
"""
import sys

from medswift.data.converters.captions import main

if __name__ == "__main__":
    sys.exit(main())
