#!/usr/bin/env python3
"""Checks that an `ember export` file reads correctly in Python's `safetensors`.

    python3 scripts/check_export.py model.safetensors [roundtrip.safetensors]

Loads every tensor with safetensors.numpy, prints names, shapes and the null-class row of the
class embedding, and writes the tensors back out (default: <file>.roundtrip.safetensors) so that
`ember compare model.safetensors roundtrip.safetensors` can confirm Python saw exactly the values
Ember wrote (max abs difference 0). Needs `pip install safetensors numpy`.
"""
import sys

from safetensors.numpy import load_file, save_file


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    path = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) == 3 else path + ".roundtrip.safetensors"
    tensors = load_file(path)
    total = sum(t.size for t in tensors.values())
    print(f"{path}: {len(tensors)} tensors, {total} parameters")
    emb = tensors["class_embedding.weight"]
    print(f"class_embedding.weight {emb.shape}: {emb.shape[0] - 1} classes + the null row")
    print(f"null row (first 4 values): {emb[-1, :4]}")
    for name in sorted(tensors)[:5]:
        print(f"  {name} {tensors[name].shape} {tensors[name].dtype}")
    save_file(tensors, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
