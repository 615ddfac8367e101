"""Reward audit: score image-blind completions (normal templates, a negation list, the most common
reference, a hedge) against a dataset's references and say whether the clinical reward can be
earned without reading the image. The code lives in `medswift.posttrain.reward_audit`; `--help` lists
every flag. For research only, not for diagnosis.
"""
import sys

from medswift.posttrain.reward_audit import main

if __name__ == "__main__":
    sys.exit(main())
