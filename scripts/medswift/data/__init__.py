"""Dataset conversion, in three kinds of module:

readers/     one module per source format, each implementing the reader contract (readers/contract.py)
converters/  one module per task: reports (report generation over the readers), chestxray14 and
             ham10000 (classification), captions, grounding (boxes)
pipeline/    the steps every converter shares, in order: records -> studies -> image_index ->
             checks -> splits -> output_files (+ classification_outputs) -> command; last_conversion
             (the launchers' hint) and sample_length (MAX_LENGTH=auto)
"""
