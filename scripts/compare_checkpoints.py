"""Did post-training help? An SFT and an RL report card side by side, with one verdict.

The code lives in `medswift.posttrain.compare` (scripts/medswift/); `--help` lists every flag.
For research only, not for diagnosis.
"""
import sys

from medswift.posttrain.compare import main

if __name__ == "__main__":
    sys.exit(main())
