"""`edgefss classes BUNDLE`: the class names a bundle can segment.

TLG: the names of its text table (frozen at export; another name is refused with close matches).
CST: any name — its pseudo-mask is class-agnostic and the name only labels the output. Reads the
manifest and the text table only (no engine starts). Torch-free.
"""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("bundle", help="bundle directory written by `edgefss export`")


def known_classes(bundle_dir) -> tuple[list | None, str]:
    """(the bundle's class names, where they come from); names None when any name works (CST)."""
    from edgefss.bundle import read_manifest

    man = read_manifest(bundle_dir, verify=True)
    if man.get("model") != "tlg":
        return None, "CST: the name only labels the output"
    from edgefss.runtime.tlg import TLGAdapter

    table = TLGAdapter.load_text_table(None, man, bundle_dir)
    return [str(c) for c in table.classes], f"TLG text table, {table.source}"


def run(args) -> int:
    names, source = known_classes(args.bundle)
    if names is None:
        print(f"{args.bundle}: any name — class-agnostic pseudo-mask ({source})")
        return 0
    print(f"{args.bundle}: {len(names)} classes ({source}):")
    for n in names:
        print(f"  {n}")
    return 0
