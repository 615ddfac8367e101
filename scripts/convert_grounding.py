"""Convert chest X-ray box annotations (ChestX-ray14 BBox_List_2017.csv, VinDr-CXR train.csv, RSNA
stage_2_train_labels.csv) into Qwen3-VL grounding samples (box JSON on the 0-1000 scale), split by patient.

The code lives in `medswift.data.converters.grounding` (scripts/medswift/); `--help` lists every flag.
For research only, not for diagnosis.
"""
import sys

from medswift.data.converters.grounding import main

if __name__ == "__main__":
    sys.exit(main())
