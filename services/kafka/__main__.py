"""``python -m services.kafka fetch|status``: resolve the embedded broker's jars once, or check them.

A failure prints one line naming the cause and what to do, and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from services import kafka
from services.procs import LaunchError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m services.kafka")
    p.add_argument("cmd", choices=["fetch", "status"])
    p.add_argument("--force", action="store_true", help="resolve again even if the cache verifies")
    args = p.parse_args(argv)
    try:
        if args.cmd == "fetch":
            home = kafka.fetch(force=args.force, quiet=True)
            print(f"kafka {kafka.kafka_version()}: {len(kafka.verify(home))} jars in {home}")
        else:
            info = kafka.describe_cache()
            print(json.dumps(info, indent=1))
            return 0 if info["ok"] else 1
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
