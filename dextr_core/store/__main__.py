"""Command line of the progress store: ``python -m dextr_core.store copy --from FILE --to URL``.

``copy`` moves a project from the file store to PostgreSQL, verified (every image record,
object, event and the summary read back equal before the copy is committed). Stop the app
servers (or accept that changes made after the copy are not moved), copy, then point every
server at the database (``admin.database`` or ``DEXTR_DATABASE_URL``).
"""

from __future__ import annotations

import argparse
import sys

from ..errors import DextrError


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status (0 done, 2 refused with a message)."""
    parser = argparse.ArgumentParser(prog="python -m dextr_core.store")
    sub = parser.add_subparsers(dest="command", required=True)
    copy = sub.add_parser("copy", help="copy a file store into a PostgreSQL database, verified")
    copy.add_argument("--from", dest="src", required=True, metavar="FILE",
                      help="the file store (.dextr_progress.json)")
    copy.add_argument("--to", dest="dst", required=True, metavar="URL",
                      help="postgresql://user@host/database")
    copy.add_argument("--source", default=".", help="the images' folder (required.source)")
    copy.add_argument("--replace", action="store_true",
                      help="overwrite a database that already holds a store")
    args = parser.parse_args(argv)
    from .postgres import copy_to_postgres, is_postgres_url, redact_url

    if not is_postgres_url(args.dst):
        print(f"--to must be a postgresql:// URL, got {args.dst!r}.", file=sys.stderr)
        return 2
    try:
        counts = copy_to_postgres(args.src, args.dst, args.source, replace=args.replace)
    except DextrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Copied {counts['images']} images, {counts['objects']} objects and "
          f"{counts['events']} events from {args.src} to {redact_url(args.dst)}; verified: "
          "image records, objects, events and summary are equal.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
