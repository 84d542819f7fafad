#!/usr/bin/env python3
"""Checks golden.json with an independent msgpack implementation (Python's `msgpack`).

For every vector: the bytes decode to 'value', and encoding 'value' again with the rules of
PROTOCOL.md (keys in listed order - the order in 'value' -, shortest int forms, float64 for
floats, str for text) gives back exactly the same bytes. A client in another language can
mirror this script to check its own encoder.

    python3 schemas/golden/check_golden.py [schemas/golden/golden.json]

Needs the msgpack package (Debian: python3-msgpack, installed by scripts/setup). Exits 0 when
every vector matches, 1 otherwise - also when it cannot run: the test suite runs it as the
ctest `golden_python`, and a check that silently skips proves nothing.
"""

import json
import pathlib
import sys

try:
    import msgpack
except ImportError:  # pragma: no cover - environment without the package
    print(f"check_golden.py: {sys.executable} has no msgpack package "
          "(Debian: python3-msgpack; scripts/setup installs it)", file=sys.stderr)
    sys.exit(1)


def main() -> int:
    path = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).with_name("golden.json"))
    doc = json.loads(path.read_text(encoding="utf-8"))
    failures = 0
    for vector in doc["vectors"]:
        data = bytes.fromhex(vector["hex"])
        decoded = msgpack.unpackb(data, raw=False, strict_map_key=True)
        if decoded != vector["value"]:
            print(f"{vector['name']}: decodes to {decoded!r}, expected {vector['value']!r}")
            failures += 1
            continue
        # json keeps key order and gives floats for floats, ints for ints: exactly the wire
        # types. use_single_float=False -> float64 always, like the C++ encoder.
        encoded = msgpack.packb(vector["value"], use_bin_type=True, use_single_float=False)
        if encoded != data:
            print(f"{vector['name']}: re-encodes to {encoded.hex()}, expected {vector['hex']}")
            failures += 1
    print(f"{len(doc['vectors']) - failures}/{len(doc['vectors'])} golden vectors match")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
