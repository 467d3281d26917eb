"""``jsqa models list|promote|rollback``: the registry's versions and the champion alias."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from jsqa.cli.common import params

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


def add_parser(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="list registered versions; move or roll back @champion")
    group = models.add_subparsers(dest="models_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--name",
        default=None,
        help="registered model (default: register.mos_name); the encoder and MOS model move together",
    )
    common.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    common.add_argument("--root", default=".", help="project root holding mlflow.db")
    sp = group.add_parser("list", parents=[common], help="versions, aliases, provenance tags and metrics")
    sp.set_defaults(func=run_list)
    sp = group.add_parser("promote", parents=[common], help="point @champion at VERSION (and its encoder)")
    sp.add_argument("version", help="version number of --name")
    sp.set_defaults(func=run_promote)
    sp = group.add_parser("rollback", parents=[common], help="point @champion back at the previous champion")
    sp.set_defaults(func=run_rollback)


def _client(args: argparse.Namespace) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    from jsqa.tracking import configure

    configure(args.root)
    return MlflowClient()


def _print_moves(verb: str, moves: dict, alias: str) -> None:
    for model, move in moves.items():
        print(f"{verb}: {model}@{alias} v{move['from'] or '-'} -> v{move['to']}")


def run_list(args: argparse.Namespace) -> int:
    from jsqa.registry.champion import champion_history, format_versions, list_versions

    p = params(args)
    client, name = _client(args), args.name or p.register.mos_name
    print(format_versions(list_versions(client, name)))
    print(f"@{p.register.alias} history (oldest first): {', '.join(champion_history(client, name)) or '-'}")
    return 0


def run_promote(args: argparse.Namespace) -> int:
    from jsqa.registry.champion import promote

    p = params(args)
    moves = promote(_client(args), p.register, args.name or p.register.mos_name, args.version)
    _print_moves("promote", moves, p.register.alias)
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    from jsqa.registry.champion import rollback

    p = params(args)
    moves = rollback(_client(args), p.register, args.name or p.register.mos_name)
    _print_moves("rollback", moves, p.register.alias)
    return 0
