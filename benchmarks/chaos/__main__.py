"""``python -m chaos``: run the scenarios and print one JSON line of figures each (see the
package docstring). Exits 1 if any figure of any scenario is not 0."""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

import pytest

from chaos.procs import Processes
from chaos.run import run_scenario
from chaos.scenarios import FULL, SHORT


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # so every scenario's cleanup runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaos", description=__doc__)
    parser.add_argument("--short", action="store_true", help="the CI sizes")
    parser.add_argument(
        "--scenario", action="append", choices=sorted(FULL), help="run only these (repeatable)"
    )
    parser.add_argument("--seed", type=int, help="reproduce the fault times of a printed seed")
    parser.add_argument("--keep", action="store_true", help="keep every scenario's folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    table = SHORT if args.short else FULL
    names = args.scenario or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        parser.error(f"not in the {'short' if args.short else 'full'} suite: {unknown}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    print(f"chaos: seed {seed}", file=sys.stderr)
    clean = True
    for name in names:
        folder = Path(tempfile.mkdtemp(prefix=f"airdask-chaos-{name}-"))
        procs = Processes()
        try:
            line = run_scenario(
                table[name],
                seed=seed,
                procs=procs,
                folder=folder,
                size="short" if args.short else "full",
            )
        except pytest.skip.Exception as exc:  # no PostgreSQL server binaries
            line = {"scenario": name, "seed": seed, "skipped": str(exc)}
        finally:
            procs.kill_all()
        good = all(v == 0 for v in line.get("figures", {}).values())
        clean = clean and good
        print(json.dumps(line), flush=True)
        if good and not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
