"""Send X-rays to a running MedSwift-VL server and collect its reports as batch-inference rows.

The code lives in `medswift.infer.client` (scripts/medswift/); this file keeps the command at the
path the README and the reference system use. `--help` lists every flag.
For research only, not for diagnosis.
"""
import sys

from medswift.infer.client import main

if __name__ == "__main__":
    sys.exit(main())
