"""The steps every converter shares: records, checks, splits, output files, the command line."""
