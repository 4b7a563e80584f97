"""The `cbdm` command: inspect what a config can use and check a config before running it."""
from __future__ import annotations

import argparse
import sys

from .config import ConfigError, load_config, registered_losses, variant_settings


def cmd_losses(args) -> int:
    from .losses import LOSSES

    for name, description in registered_losses().items():
        options = ", ".join(f"{k}={v!r}" for k, v in LOSSES[name].defaults.items()) or "no options"
        print(f"{name}: {description}\n    {options}")
    return 0


def cmd_check(args) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"{args.config}: {err}", file=sys.stderr)
        return 1
    for name in config["variants"]:
        settings = variant_settings(config, name)
        terms = ", ".join(f"{t['weight']} x {t['name']}" for t in settings["losses"]) or "external rule"
        print(f"variant {name}: {terms}; guidance {settings['guidance']}")
    print(f"{args.config}: OK")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cbdm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("losses", help="list the registered losses and their options").set_defaults(run=cmd_losses)
    check = sub.add_parser("check", help="validate a config file")
    check.add_argument("config")
    check.set_defaults(run=cmd_check)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
