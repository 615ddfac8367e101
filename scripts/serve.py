"""Serve a model with ms-swift's deploy app in this one process, guarded (key, token ceiling, media, disconnects).

The code lives in `medswift.infer.server` (scripts/medswift/); this file keeps the command at the
path the README and the reference system use. `--help` lists every flag.
For research only, not for diagnosis.
"""
import sys

from medswift.infer.server import main

if __name__ == "__main__":
    sys.exit(main())
