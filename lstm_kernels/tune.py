"""``python -m lstm_kernels.tune --show | --clear``: list or clear ``backend="auto"``'s cache."""
from __future__ import annotations

import argparse

from . import dispatch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lstm_kernels.tune", description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--show", action="store_true", help="list the cached choices")
    group.add_argument("--clear", action="store_true", help="delete the cache file")
    args = parser.parse_args(argv)
    if args.clear:
        dispatch.clear_cache()
        print(f"cleared {dispatch.cache_path()}")
        return 0
    entries = dispatch.read_cache()
    print(f"{dispatch.cache_path()}: {len(entries)} entries")
    for key, entry in sorted(entries.items()):
        times = ", ".join(f"{k} {v:.3f} ms" for k, v in sorted(entry.get("times_ms", {}).items()))
        print(f"{key}\n    -> {entry['backend']}  ({times})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
