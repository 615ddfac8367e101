"""MedSwift-VL: fine-tune, run, evaluate, serve and demonstrate Qwen3-VL on medical images.

Layers, each importing only from the layers below it (test/test_structure.py checks this):
    posttrain  rewards (the clinical GRPO/DPO rewards, the box reward), datasets (the GRPO view,
               DPO sampling and pair building, the reward checks), compare (SFT vs RL), card (model
               cards with the post-training stage: the launchers' model-card command)
    data       readers/ (the reader contract and one module per source format: openi, iu_xray,
               r2gen_annotation, mimic_cxr, llamafactory); converters/ (reports, chestxray14,
               ham10000, captions, grounding); pipeline/ (records -> studies -> image_index ->
               checks -> splits -> output_files and classification_outputs -> command;
               last_conversion, the launchers' hint; sample_length, MAX_LENGTH=auto)
    infer      inputs, prediction_rows (the prediction-row format), prediction_file (checks,
               resume, part files), data_parallel (torchrun ranks), batch, client, request_guard
               (the server's checks and middleware), server, classify
    eval       text_metrics, findings (the rule-based labeller), report_card, box_card, charts,
               classification (its card), bootstrap, provenance, r2gen_cleaning, scorer_workers,
               model_card
    core       cli (the argument parser), constants (shared names and the run defaults), errors
               (UsageError, Rejected, run_cli, one_line), files (UTF-8 reading, atomic writes),
               images (decoding and checks, DICOM too), models (model/adapter resolution, the image
               budget, engine loading), prompts, thinking (the reasoning split), boxes (the box
               format, parsing and IoU), labels (the classification tasks' label sets and answers)
data, infer and eval stand side by side: none imports another of the three.

The command-line scripts in scripts/, the ms-swift plugins, the demo in app/ and the launchers in
tools/ sit on top and are thin wrappers over these modules.
For research only, not for diagnosis.
"""
