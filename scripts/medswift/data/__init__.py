"""Dataset converters: the shared core (checks, splits, outputs) and one reader module per dataset."""
