"""Signal processing shared by pairs, the demo corpus and training: speech levels, SNR mixing, distortions."""
