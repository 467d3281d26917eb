"""The names the project lists once (profiles, peers, metric directions) agree wherever they are used."""

from __future__ import annotations

import typing

from jsqa.config import DIRECTIONS, PEER_NAMES, PROFILES, EvaluateConfig, Profile, RegisterConfig
from jsqa.evaluation.metrics import LOWER_IS_BETTER, METRICS
from jsqa.evaluation.peers import PEERS


def test_profiles_are_the_params_choices_and_each_has_a_licence_line() -> None:
    from flows import pipeline, profile_switch
    from jsqa.registry.model_card import LICENCES

    assert PROFILES == typing.get_args(Profile) == ("demo", "paper")
    assert profile_switch.PROFILES is PROFILES
    for profile in PROFILES:  # the pipeline's --profile takes each profile
        assert pipeline.build_parser().parse_args(["run", "--profile", profile]).profile == profile
    assert set(LICENCES) == set(PROFILES)


def test_peer_names_are_the_implemented_peers_and_the_default() -> None:
    assert tuple(PEERS) == PEER_NAMES
    assert {name: cls.info.name for name, cls in PEERS.items()} == {n: n for n in PEER_NAMES}
    assert EvaluateConfig().peers == PEER_NAMES


def test_every_reported_metric_has_one_direction_the_registry_uses() -> None:
    from jsqa.registry.register import check_direction, higher_is_better

    assert set(METRICS) <= set(LOWER_IS_BETTER)
    for metric, lower in LOWER_IS_BETTER.items():
        assert higher_is_better(f"val_{metric}") is (not lower)
        assert check_direction(metric, "lower" if lower else "higher") is (not lower)
    assert RegisterConfig().direction in DIRECTIONS == ("higher", "lower")
