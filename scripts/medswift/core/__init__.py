"""What every job shares: image decoding, prompts, the reasoning split, model resolution, the box
format, the task label sets, errors, files."""
