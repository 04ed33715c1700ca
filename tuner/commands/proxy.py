"""`tuner proxy train`: reproduce the shipped proxy weights."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("proxy", help="the embedded proxy model (tuner proxy train)")
    psub = p.add_subparsers(dest="proxy_command", required=True, metavar="COMMAND", title="commands")
    t = psub.add_parser("train", help="train the proxy U-Net and the digit classifier (fixed seed, CPU)")
    t.add_argument("--out", default=None, metavar="DIR", help="output folder (default: the package's assets)")
    t.add_argument("--iters", type=int, default=2000, help="U-Net training iterations (default 2000)")
    t.add_argument("--classifier-epochs", type=int, default=40, help="digit classifier epochs (default 40)")
    t.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    t.set_defaults(func=run_train)


def run_train(args) -> int:
    from tuner.errors import TunerError
    from tuner.proxy.model import ASSETS
    from tuner.proxy.train import train_all

    if args.iters < 1 or args.classifier_epochs < 1:
        raise TunerError("--iters and --classifier-epochs must be >= 1")
    print(json.dumps(train_all(args.out or ASSETS, args.iters, args.classifier_epochs, args.seed), indent=2))
    return 0
