"""Report card for generated X-ray reports: text metrics, findings, and "does it read the image?".

The code lives in `medswift.eval.report_card` (scripts/medswift/); this file keeps the command at the
path the README and the reference system use. `--help` lists every flag.
For research only, not for diagnosis.
"""
import sys

from medswift.eval.report_card import main

if __name__ == "__main__":
    sys.exit(main())
