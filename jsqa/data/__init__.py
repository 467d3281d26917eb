"""Corpora: generation or download (acquire), manifests, and validation."""
