"""Run the GPU node twin: python -m lab.twin --state DIR --spec FILE (started by `python -m lab up`)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from kubernetes import config

from lab import pki
from lab.spec import load
from lab.state import LabPaths
from lab.twin.twin import Twin


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.twin")
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--spec", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    paths = LabPaths(root=args.state)
    api = config.new_client_from_config(config_file=str(paths.kubeconfig(pki.TWIN.stem)))
    api.configuration.connection_pool_maxsize = 16
    twin = Twin(paths, load(args.spec), api)
    twin.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
