"""Learning a part model from a reference set (augmentation, resumable training) and pretraining the tiny backbone."""
