"""MedSwift-VL: fine-tune, run, evaluate, serve and demonstrate Qwen3-VL on medical images.

Layers, each importing only from those above it:
    core   cli (the argument parser), constants (shared names and the run defaults), errors
           (UsageError, Rejected, run_cli, one_line), files (UTF-8 reading, atomic writes),
           images (decoding and checks, DICOM too), models (model/adapter resolution, the image
           budget, engine loading), prompts, thinking (the reasoning split)
    data   the converter pipeline in its order: records (Candidate, Reading, JSON/CSV parsing)
           -> studies (views into study samples, report sections) -> image_index -> checks
           (image checks, the kept/skipped verdict) -> splits -> outputs (samples, lists,
           summary) -> command (flags, main) and last_conversion (the launchers' hint);
           reader (the reader contract) and reports (the report converter and its READERS:
           openi, iu_xray, r2gen_annotation, mimic_cxr, llamafactory); the other converters
           (chestxray14, ham10000, captions); tasks (label sets); budget (sample lengths)
    infer  inputs, rows (the prediction-row format), output (resume, part files), data_parallel
           (torchrun ranks), batch, client, request_guard (the server's checks and middleware), server, classify
    eval   text_metrics, findings (the rule-based labeller), report_card, charts (the cards'
           charts), classification (its card), bootstrap, provenance, r2gen_cleaning (R2Gen's
           text normalisation), scorer_workers (worker processes for large files), model_card

The command-line scripts in scripts/ and the demo in app/ are thin wrappers over these modules.
For research only, not for diagnosis.
"""
