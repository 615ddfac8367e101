"""MedSwift-VL: fine-tune, run, evaluate, serve and demonstrate Qwen3-VL on medical images.

Layers, each importing only from those above it:
    core   images, prompts, the reasoning split, model/adapter resolution, errors, constants, files
    data   the shared converter core and one reader per dataset (openi, chestxray14, ham10000, captions)
    infer  input collection, prediction rows, output/resume, batch inference, the server and its client
    eval   text metrics, the rule-based findings labeller, report cards

The command-line scripts in scripts/ and the demo in app/ are thin wrappers over these modules.
For research only, not for diagnosis.
"""
