"""``ilif-data NAME``: check (and build the caches of) a dataset; prints its sizes, or one error line (exit 2)."""

from __future__ import annotations

import argparse
import sys

import ilif
from ilif.errors import bad_input, entry_point

from . import NAMES, build


@entry_point
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ilif-data", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {ilif.__version__}")
    parser.add_argument("name", choices=NAMES)
    parser.add_argument("--root", help="data root (default: $ILIF_DATA, else ./data)")
    parser.add_argument("--T", type=int, help="frames per sample for event datasets")
    parser.add_argument("--split", default="reference", help="cifar10_dvs: reference or random")
    parser.add_argument("--preprocess", default="clean", help="event frames: clean or reference")
    parser.add_argument("--no-download", action="store_true", help="never try to download")
    args = parser.parse_args(argv)
    cfg = {"name": args.name, "root": args.root, "split": args.split, "preprocess": args.preprocess,
           "download": not args.no_download}
    if args.T is not None:
        cfg["T"] = args.T
    with bad_input():
        train, test, info = build(cfg)
        sample, label = train[0]
    print(f"{info.name}: {len(train)} train / {len(test)} test samples, {info.num_classes} classes, "
          f"sample {tuple(sample.shape)} {sample.dtype}, split {info.split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
