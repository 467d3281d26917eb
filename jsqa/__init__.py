"""jsqa: speech quality assessment with contrastive pretraining on JND audio pairs."""

__version__ = "0.1.0"
