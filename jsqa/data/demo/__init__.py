"""Offline demo corpus (the generator moves into modules by concern next)."""

from jsqa.data.demo.corpus import (
    DemoCorpus,
    clean_talkers,
    corpus_at,
    demo_condition,
    generate_demo,
    make_noise,
    prepare_demo,
    proxy_mos,
    synth_utterance,
)

__all__ = [
    "DemoCorpus",
    "clean_talkers",
    "corpus_at",
    "demo_condition",
    "generate_demo",
    "make_noise",
    "prepare_demo",
    "proxy_mos",
    "synth_utterance",
]
