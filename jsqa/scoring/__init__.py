"""Scoring audio with a trained model: input limits, windowed inference, `jsqa predict`, serving, export."""
