"""MedSwift-VL version, read by the scripts and the demo."""
__version__ = "0.1.0"
