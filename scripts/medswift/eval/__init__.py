"""Evaluation: text metrics, the rule-based findings labeller, report cards for reports, labels and boxes."""
