"""Post-training (GRPO / DPO): the clinical rewards, the data views and DPO pairs, the SFT-vs-RL
comparison and the post-training section of a model card. Above data, infer and eval; below the
command-line scripts, the ms-swift plugin and the launchers."""
