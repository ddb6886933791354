"""Copies a torch.save zip checkpoint with its first storage claiming ELEMENTS elements,
leaving the storage's record (its bytes in the file) as it was: a storage whose size
exceeds its record, which torch.load would allocate (or, memory-mapped, read past the
record into the rest of the file). The pickle is edited at the opcode level, never run.

Usage: inflate_storage.py SRC.pth DST.pth ELEMENTS
"""
import pickletools
import struct
import sys
import zipfile

src, dst, elements = sys.argv[1], sys.argv[2], int(sys.argv[3])
zin = zipfile.ZipFile(src)
name = next(n for n in zin.namelist() if n.endswith("data.pkl"))
pkl = zin.read(name)
ops = list(pickletools.genops(pkl))
# A storage reference is the tuple ('storage', type, key, location, elements) just before
# a BINPERSID; its last item is the integer op before the tuple's TUPLE op.
persid = next(i for i, (op, _, _) in enumerate(ops) if op.name == "BINPERSID")
tup = max(j for j in range(persid) if ops[j][0].name == "TUPLE")
count_op, _, at = ops[tup - 1]
assert count_op.name.startswith(("BININT", "LONG")), count_op.name
edited = pkl[:at] + b"\x8a\x08" + struct.pack("<q", elements) + pkl[ops[tup][2] :]  # LONG1, 8 bytes
with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
    for n in zin.namelist():
        z.writestr(zin.getinfo(n), edited if n == name else zin.read(n))
