"""``python -m training.latest``: list a model's versions, or point its ``latest`` at one.

    python -m training.latest --out models [--name NAME]            # versions, newest last
    python -m training.latest --out models [--name NAME] VERSION    # roll out or back to VERSION

Every replica serving the folder picks the change up within ``FORECAST_MODEL_POLL_S`` (or at
once on ``POST /models/reload``). The link is replaced atomically, as the training job does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from forecast_core.artifact import DEFAULT_MODEL, LATEST_LINK, MANIFEST_FILE, point_latest_at
from training.cli import EXIT_BAD_INPUT, _model_name


def versions(folder: Path) -> list[str]:
    """The artifact folders in a model's folder, oldest first (versions start with their time)."""
    if not folder.is_dir():
        return []
    return sorted(
        child.name
        for child in folder.iterdir()
        if child.name != LATEST_LINK
        and not child.is_symlink()
        and (child / MANIFEST_FILE).is_file()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.latest",
        description="List a model's versions, or point its latest at one (roll out or back).",
    )
    parser.add_argument("--out", type=Path, default=Path("models"), help="models folder")
    parser.add_argument("--name", type=_model_name, default=None, help="a named model")
    parser.add_argument("version", nargs="?", help="the version to serve")
    args = parser.parse_args(argv)
    folder = args.out / args.name if args.name not in (None, DEFAULT_MODEL) else args.out
    known = versions(folder)
    latest = folder / LATEST_LINK
    current = latest.resolve().name if latest.exists() else None
    if args.version is None:
        for version in known:
            print(f"{version}{'  <- latest' if version == current else ''}")  # noqa: T201
        return 0
    if args.version not in known:
        print(  # noqa: T201
            f"python -m training.latest: error: {folder} holds no version {args.version!r}"
            f" ({', '.join(known) or 'none'})",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    point_latest_at(folder, args.version)
    print(f"{latest} -> {args.version} (was {current})")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
