"""Task converters: each turns one kind of dataset into ms-swift JSONL through the pipeline steps."""
