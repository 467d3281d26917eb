"""Offline demo corpus: synthetic talkers, synthetic noise and a MOS-labelled degraded set.

Everything is generated from a seed, with no downloads, so the whole pipeline can run (and be
tested) on a laptop. Three parts are written under one directory:

- ``clean/<talker>/<talker>-<k>.wav``: speech-like utterances from source-filter synthesis
  (glottal pulses with a pitch contour through formant resonators, fricative noise bursts,
  syllable envelopes and pauses between words), at the speech level ``-26 dBov``.
- ``noise/<family>-<k>.wav``: white, pink, brown, babble (other synthetic talkers), hum and
  transients.
- ``mos/``: degraded clips, their clean references and ``NISQA_corpus_file.csv`` in the layout
  of the NISQA corpus, split by talker into DEMO_TRAIN, DEMO_VAL, DEMO_TEST_NOISE and
  DEMO_TEST_MIXED.

The MOS labels are NOT human ratings. They come from an objective proxy, :func:`proxy_mos`
(a frequency-weighted segmental SNR against the clean reference mapped through a logistic),
plus Gaussian rater-like scatter. They are good enough to check that a model learns "more
degradation, lower score", and nothing more: never report results on them as quality results.
The per-dimension columns ``noi``, ``col``, ``dis`` and ``loud`` are proxies as well
(:func:`dimension_proxies`, docs/data.md).

Modules by concern: :mod:`~jsqa.data.demo.speech` (talkers and the synthesiser),
:mod:`~jsqa.data.demo.noise` (noise families), :mod:`~jsqa.data.demo.degrade` (the MOS clips'
degradations), :mod:`~jsqa.data.demo.label` (proxy MOS, dimension proxies, conditions),
:mod:`~jsqa.data.demo.corpus` (generation, splits, manifests) and
:mod:`~jsqa.data.demo.streams` (the random streams). Only re-exports here.
"""

from jsqa.data.demo.corpus import DemoCorpus, corpus_at, generate_demo, prepare_demo, split_talkers
from jsqa.data.demo.label import demo_condition, dimension_proxies, fwsnrseg, proxy_mos
from jsqa.data.demo.noise import NOISE_FAMILIES, make_noise
from jsqa.data.demo.speech import Talker, clean_talkers, make_talker, synth_utterance

__all__ = [
    "NOISE_FAMILIES",
    "DemoCorpus",
    "Talker",
    "clean_talkers",
    "corpus_at",
    "demo_condition",
    "dimension_proxies",
    "fwsnrseg",
    "generate_demo",
    "make_noise",
    "make_talker",
    "prepare_demo",
    "proxy_mos",
    "split_talkers",
    "synth_utterance",
]
