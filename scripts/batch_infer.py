"""Batched, resumable report generation over many X-rays (PNG, JPEG, DICOM).

The code lives in `medswift.infer.batch` (scripts/medswift/); this file keeps the command at the
path the README and the reference system use. `--help` lists every flag.
For research only, not for diagnosis.
"""
import sys

from medswift.infer.batch import main

if __name__ == "__main__":
    sys.exit(main())
