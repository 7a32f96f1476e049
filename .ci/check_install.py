"""Checks run inside one of .ci/matrix.sh's virtual environments, after the library was installed.

    python .ci/check_install.py --expect ag2==0.10.5 --absent autogen

- no file is claimed by two installed distributions (their RECORD files compared);
- the AG2 Classic distribution that was there before is still there, at the same version, and the
  other one (``--absent``) was not pulled in on top of it;
- ``import autogen`` gives GroupChat, at the expected version;
- the library imports and says which extras to use when AG2 Classic is missing or out of range
  (``persistency._ag2.require_ag2``, when that module exists).

Exit status 1 with one line per problem. Standard library only: it runs before anything else is known
to work.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from importlib import metadata


def claimed_twice() -> dict[str, list[str]]:
    """Files (relative to site-packages) that more than one installed distribution lists in its RECORD."""
    owners: dict[str, set[str]] = defaultdict(set)
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        for f in dist.files or []:
            path = str(f).replace("\\", "/")
            if "__pycache__/" in path or path.endswith(".pyc") or ".dist-info/" in path or path.startswith(".."):
                continue
            owners[path].add(name)
    return {p: sorted(n) for p, n in owners.items() if len(n) > 1}


def check_without_ag2() -> list[str]:
    """No AG2 Classic installed: the storage side imports, and the feature refuses with a message naming both extras."""
    import persistency  # noqa: F401 - must import without autogen
    from persistency.cli import app  # noqa: F401 - the command line too
    from persistency.errors import AG2VersionError

    try:
        from persistency import Persistency  # noqa: F401 - what a user writes; it must refuse, naming the extras
    except AG2VersionError as exc:
        text = str(exc)
        missing = [extra for extra in ("[ag2]", "[autogen]") if extra not in text]
        if missing:
            return [f"AG2VersionError does not name {', '.join(missing)}: {text}"]
        print(f"without AG2: {text}")
        return []
    except ImportError as exc:
        return [f"'from persistency import Persistency' fails with a bare {type(exc).__name__}: {exc}"]
    return ["'from persistency import Persistency' raised nothing although no AG2 Classic is installed"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--expect", action="append", default=[], help="NAME==VERSION that must be installed")
    parser.add_argument("--absent", action="append", default=[], help="a distribution that must not be installed")
    parser.add_argument("--autogen-version", help="what autogen.__version__ must be")
    parser.add_argument("--no-ag2", action="store_true", help="no AG2 Classic is installed: check the messages")
    args = parser.parse_args()
    problems: list[str] = []

    twice = claimed_twice()
    if twice:
        sample = ", ".join(f"{p} ({' and '.join(n)})" for p, n in list(twice.items())[:5])
        problems.append(f"{len(twice)} file(s) claimed by two distributions, e.g. {sample}")
    for spec in args.expect:
        name, _, want = spec.partition("==")
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name} is not installed (expected {want})")
            continue
        if have != want:
            problems.append(f"{name} is {have}, expected {want} (the install changed it)")
    for name in args.absent:
        try:
            problems.append(f"{name} {metadata.version(name)} was installed on top (it must not be)")
        except metadata.PackageNotFoundError:
            pass

    if args.no_ag2:
        problems.extend(check_without_ag2())
    else:
        import autogen
        from autogen import GroupChat, GroupChatManager  # noqa: F401 - the classic API must be there

        if args.autogen_version and autogen.__version__ != args.autogen_version:
            problems.append(f"import autogen gives {autogen.__version__}, expected {args.autogen_version}")
        import persistency

        print(f"ag2-persistency {persistency.__version__} with autogen {autogen.__version__}; "
              f"{sum(1 for _ in metadata.distributions())} distributions installed")
    for p in problems:
        print(f"install check: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
