"""Convert chest X-ray reports + images (OpenI annotations, the reference's list) into ms-swift JSONL.

The code lives in `medswift.data.converters.reports` (scripts/medswift/); this file keeps the command at the
path the README and the reference system use. `--help` lists every flag.
For research only, not for diagnosis.
"""
import sys

from medswift.data.converters.reports import main

if __name__ == "__main__":
    sys.exit(main())
