"""Training and evaluation loops: ``pretrain`` (contrastive pretraining) and the checkpoints they write."""
