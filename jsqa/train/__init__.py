"""Training loops: contrastive pretraining and MOS fine-tuning (pretrained or from scratch)."""
