"""Inference: inputs, prediction rows, output files, batch inference, the HTTP server and its client."""
