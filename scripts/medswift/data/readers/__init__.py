"""Source formats, one module each, behind the reader contract (contract.py)."""
