"""What every job shares: image decoding, prompts, the reasoning split, model resolution, errors, files."""
