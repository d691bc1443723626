#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Writes the seed corpus of the fuzz targets into tests/fuzz/corpus/TARGET/.
# Run from the repo after `ninja` (it uses build/tests/lp-dump and the CRIU
# 4.2 fixtures in ../shared/fixtures beside the checkout, or FIXTURES=dir); the files it writes
# are committed, so this only needs running again to change the seeds.
#   python3 tests/fuzz/mkcorpus.py
import os
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests/fuzz/corpus")
FIXTURES = os.environ.get("FIXTURES", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../shared/fixtures/criu-4.2/dump"))
PAGE = 4096


# ---- protobuf, by hand (proto2 wire format) ----
def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fv(field, n):  # varint field
    return varint(field << 3) + varint(n)


def fb(field, data):  # length-delimited field
    if isinstance(data, str):
        data = data.encode()
    return varint(field << 3 | 2) + varint(len(data)) + data


def fd(field, x):  # double
    return varint(field << 3 | 1) + struct.pack("<d", x)


def entry(msg):
    return struct.pack("<I", len(msg)) + msg


IMG_COMMON, INVENTORY, PSTREE, MM, PAGEMAP, CORE = (0x54564319, 0x58313116, 0x50273030, 0x57492820,
                                                     0x56084025, 0x55053847)


def img(magic, *msgs, version=2):
    head = struct.pack("<I", magic) if magic == INVENTORY or version == 1 else struct.pack("<II", IMG_COMMON, magic)
    return head + b"".join(entry(m) for m in msgs)


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- fuzz-images: u8 kind | u32 num | u32 len | bytes ----
K_INV, K_PSTREE, K_MM, K_CORE, K_PAGEMAP, K_PAGES, K_PARENT, K_IDS = range(8)
SPARSE = 0x20


def rec(kind, num, data, level=0):
    return struct.pack("<BII", kind | level << 3, num, len(data)) + data


def sparse_pages(num, data, size, level=0):
    return rec(K_PAGES | SPARSE, num, struct.pack("<I", size) + data, level)


def from_dir(d, level=0, keep_pages=2 * PAGE):
    """A real image dir as records; pages files keep their first bytes and their size (sparse)."""
    out = b""
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        if not name.endswith(".img"):
            continue
        data = open(p, "rb").read()
        stem = name[:-4]
        if stem == "inventory":
            out += rec(K_INV, 0, data, level)
        elif stem == "pstree":
            out += rec(K_PSTREE, 0, data, level)
        else:
            kind, _, num = stem.rpartition("-")
            k = {"mm": K_MM, "core": K_CORE, "pagemap": K_PAGEMAP, "pages": K_PAGES, "ids": K_IDS}.get(kind)
            if k is None or not num.isdigit():
                continue
            if k == K_PAGES:
                out += sparse_pages(int(num), data[:keep_pages], len(data), level)
            elif k == K_CORE and len(data) > 512:
                # only tc.task_state matters: a small core keeps the seed small
                out += rec(K_CORE, int(num), img(CORE, fb(3, fv(1, 1))), level)
            else:
                out += rec(k, int(num), data, level)
    return out


def vma(start, end, flags=0x22, status=(1 | 1 << 9), prot=3):
    return fv(1, start) + fv(2, end) + fv(3, 0) + fv(4, 0) + fv(5, prot) + fv(6, flags) + fv(7, status) + fv(8, 1)


def mm(*vmas):
    m = b"".join(fv(i, 0) for i in range(1, 13))
    return m + b"".join(fb(14, v) for v in vmas)


def pme(vaddr, n, flags=None, wire=4, in_parent=None):
    m = fv(1, vaddr) + fv(2, 0 if wire == 4 else n)
    if in_parent is not None:
        m += fv(3, in_parent)
    if flags is not None:
        m += fv(4, flags)
    if wire == 4:
        m += fv(5, n)
    return m


def images_seeds():
    # CRIU 4.2 (one of the two processes), and the same with a pages file cut short
    if os.path.isdir(FIXTURES):
        sel = [n for n in sorted(os.listdir(FIXTURES)) if "12500" not in n and n != "pages-2.img"]
        tmp = tempfile.mkdtemp()
        for n in sel:
            os.symlink(os.path.join(FIXTURES, n), os.path.join(tmp, n))
        real = from_dir(tmp)
        write("fuzz-images", "criu42", real)
        pages = open(os.path.join(FIXTURES, "pages-1.img"), "rb").read()
        cut = real.replace(sparse_pages(1, pages[:2 * PAGE], len(pages)), rec(K_PAGES, 1, pages[:3 * PAGE]))
        write("fuzz-images", "criu42-short-pages", cut)
        for n in sel:
            os.unlink(os.path.join(tmp, n))
        os.rmdir(tmp)
    else:
        print("mkcorpus: no CRIU fixtures in %s, skipped" % FIXTURES, file=sys.stderr)

    # lp-dump, both pagemap wires, and a parent chain
    lpdump = os.path.join(ROOT, "build/tests/lp-dump")
    if os.access(lpdump, os.X_OK):
        with tempfile.TemporaryDirectory() as t:
            for w in ("3", "4"):
                d = os.path.join(t, "w" + w)
                subprocess.run([lpdump, "-D", d, "--size", "1", "--wire", w, "--seed", "1"], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                write("fuzz-images", "lpdump-wire" + w, from_dir(d))
            d = os.path.join(t, "chain")
            subprocess.run([lpdump, "-D", d, "--size", "1", "--chain", "2", "--holes", "10", "--seed", "1"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # restore from DIR/1, whose parent is ../0: levels d0 and d1
            write("fuzz-images", "lpdump-chain2",
                  from_dir(os.path.join(d, "1"), 0) + rec(K_PARENT, 0, b"\0", 0) + from_dir(os.path.join(d, "0"), 1))
    else:
        print("mkcorpus: no %s (run ninja), skipped" % lpdump, file=sys.stderr)

    # hand-made: every flag, a guard VMA, in_parent, a 3-level chain; version 2 and 1
    for v in (2, 1):
        inv = img(INVENTORY, fv(1, v) + fv(2, 1))
        pst = img(PSTREE, fv(1, 1) + fv(2, 0) + fv(3, 1) + fv(4, 1) + fv(5, 1), fv(1, 2) + fv(2, 1) + fv(3, 1) + fv(4, 1),
                  version=v)
        base = 0x10000000
        m = img(MM, mm(vma(base, base + 16 * PAGE), vma(base + 32 * PAGE, base + 40 * PAGE, flags=0x01),
                       vma(base + 2 * PAGE, base + 3 * PAGE, flags=0, status=1 << 16)), version=v)
        pm0 = img(PAGEMAP, fv(1, 1), pme(base, 2, 4), pme(base + 2 * PAGE, 2, 6), pme(base + 4 * PAGE, 2, 2),
                  pme(base + 6 * PAGE, 2, 1), pme(base + 8 * PAGE, 1, None, in_parent=1), pme(base + 10 * PAGE, 1),
                  pme(base + 32 * PAGE, 3, 1, wire=3), version=v)
        pm1 = img(PAGEMAP, fv(1, 2), pme(base + 6 * PAGE, 1, 4), pme(base + 7 * PAGE, 2, 1), pme(base + 32 * PAGE, 3, 6),
                  version=v)
        pm2 = img(PAGEMAP, fv(1, 3), pme(base + 7 * PAGE, 1, 4), pme(base + 8 * PAGE, 1, 2), version=v)
        core = img(CORE, fb(3, fv(1, 1)), version=v)
        s = (rec(K_INV, 0, inv) + rec(K_PSTREE, 0, pst) + rec(K_MM, 1, m) + rec(K_CORE, 1, core) +
             rec(K_PAGEMAP, 1, pm0) + rec(K_PAGES, 1, bytes(range(256)) * 16 * 5) + rec(K_PARENT, 0, b"\0") +
             rec(K_PAGEMAP, 1, pm1, 1) + rec(K_PAGES, 2, b"\x11" * PAGE * 4, 1) + rec(K_PARENT, 0, b"\0", 1) +
             rec(K_PAGEMAP, 1, pm2, 2) + rec(K_PAGES, 3, b"\x22" * PAGE, 2) + rec(K_CORE, 2, img(CORE, fb(3, fv(1, 2)), version=v)))
        write("fuzz-images", "handmade-v%d" % v, s)
    # numeric edges: an empty pstree, pid 0, a pagemap with no head, entries at the top of the address space
    inv = rec(K_INV, 0, img(INVENTORY, fv(1, 2) + fv(2, 1)))
    top = 0xFFFFFFFFFFFFF000
    write("fuzz-images", "edge-empty", inv + rec(K_PSTREE, 0, img(PSTREE)) + rec(K_PAGEMAP, 1, img(PAGEMAP)) +
          rec(K_MM, 1, img(MM)) + rec(K_CORE, 1, img(CORE)))
    write("fuzz-images", "edge-pid0", inv + rec(K_PSTREE, 0, img(PSTREE, fv(1, 0) + fv(2, 0) + fv(3, 0) + fv(4, 0))))
    write("fuzz-images", "edge-top", inv + rec(K_PSTREE, 0, img(PSTREE, fv(1, 3) + fv(2, 0) + fv(3, 3) + fv(4, 3))) +
          rec(K_PAGEMAP, 3, img(PAGEMAP, fv(1, 1), pme(0, 1 << 51, 4), pme(1 << 63, 1 << 51, 4), pme(top, 1, 2))) +
          rec(K_PAGEMAP, 4, img(PAGEMAP, fv(1, 1), pme(top - PAGE, 2, 4))) +
          rec(K_PAGEMAP, 5, img(PAGEMAP, fv(1, 1), pme(top, 2, 6))) +
          sparse_pages(1, b"", 3 * PAGE) +
          rec(K_MM, 3, img(MM, mm(vma(top - PAGE, top)))))
    # a parent chain that loops back to the top
    write("fuzz-images", "handmade-loop",
          open(os.path.join(CORPUS, "fuzz-images/handmade-v2"), "rb").read().replace(rec(K_PARENT, 0, b"\0", 1),
                                                                                  rec(K_PARENT, 0, b"\2", 1)))


# ---- fuzz-restore-sock: byte 0 = tasks - 1; 0xFD S attaches S&3 fds of kind (S>>2)&3 ----
UFFD, DEVNULL, MEMFD, UFFD_BLOCKING = range(4)


def mark(nfds, kind, other=None):
    return bytes([0xFD, nfds | kind << 2 | (kind if other is None else other) << 4])


def live(pid, spec=None):
    return struct.pack("<i", pid) + (spec if spec is not None else mark(1, UFFD)) + b"\0" + mark(0, 0)


def zombie(pid):
    return struct.pack("<i", -pid)


FINISHED = struct.pack("<I", 0x52535446)


def restore_seeds():
    w = lambda n, d: write("fuzz-restore-sock", n, d)
    w("criu-two-live-one-zombie", bytes([2]) + live(12498) + zombie(12500) + live(12501) + FINISHED)
    w("criu-one", bytes([0]) + live(1) + FINISHED)
    w("blocking-uffd", bytes([0]) + live(7, mark(1, UFFD_BLOCKING)) + FINISHED)
    w("not-a-uffd", bytes([0]) + live(7, mark(1, DEVNULL)) + FINISHED)
    w("two-fds", bytes([0]) + live(7, mark(2, UFFD, DEVNULL)) + FINISHED)
    w("no-fd", bytes([0]) + struct.pack("<i", 7) + b"\0" + FINISHED)
    w("fd-on-pid", bytes([1]) + mark(1, UFFD) + struct.pack("<i", 7) + mark(1, UFFD) + b"\0" + zombie(8) + FINISHED)
    w("duplicate", bytes([1]) + live(5) + live(5) + FINISHED)
    w("bad-marker", bytes([0]) + zombie(3) + b"ReST")
    w("literal-fd-byte", bytes([0]) + b"\1\2\3" + bytes([0xFD, 0x80]) + FINISHED)


# ---- fuzz-ps-reply: byte 0 = wire | (nreq-1) << 1 | table << 3; then the server's bytes ----
PIDS = [1, 12498, 0x7FFFFFFF]
ADDRS = [0x7A0000000000, 0x1000, 0xFFFFFFFFFFFFF000]
COUNTS = [1, 4, 16, 2]


def reqs(v, n):
    return [(PIDS[(v + i) % 3], ADDRS[(v // 3 + i) % 3], COUNTS[(v + 2 * i) % 4]) for i in range(n)]


def reply(wire, pid, addr, n, cmd=0x00040006, pad=0):
    if wire == 3:
        h = struct.pack("<IIQQ", cmd, n, addr, pid)
    else:
        h = struct.pack("<IIQQQ", cmd, pad, n, addr, pid)
    return h + bytes([(addr >> 12) & 0xFF]) * (n * PAGE)


def ps_seeds():
    for wire in (3, 4):
        for v, n, name in ((0, 1, "one"), (3, 2, "two"), (5, 4, "four-short")):
            b0 = (1 if wire == 4 else 0) | (n - 1) << 1 | v << 3
            body = b""
            for i, (pid, addr, cnt) in enumerate(reqs(v, n)):
                body += reply(wire, pid, addr, cnt if name != "four-short" else max(1, cnt // 2 + i % 2), pad=0xDEAD)
            write("fuzz-ps-reply", "w%d-%s-ack" % (wire, name), bytes([b0]) + body + struct.pack("<i", 0))
        v, n = 4, 2
        b0 = (1 if wire == 4 else 0) | (n - 1) << 1 | v << 3
        (p0, a0, c0), (p1, a1, c1) = reqs(v, n)
        hsz = 24 if wire == 3 else 32
        write("fuzz-ps-reply", "w%d-wrong-pid" % wire, bytes([b0]) + reply(wire, p0, a0, c0) + reply(wire, p1 + 1, a1, 1)[:hsz])
        write("fuzz-ps-reply", "w%d-too-many" % wire, bytes([b0]) + reply(wire, p0, a0, c0 + 1))
        write("fuzz-ps-reply", "w%d-zero-pages" % wire, bytes([b0]) + reply(wire, p0, a0, 0))
        write("fuzz-ps-reply", "w%d-cut-data" % wire, bytes([b0]) + reply(wire, p0, a0, c0)[:-100])
        v = 3
        b0 = (1 if wire == 4 else 0) | (n - 1) << 1 | v << 3
        (p0, a0, c0), (p1, a1, c1) = reqs(v, n)
        write("fuzz-ps-reply", "w%d-nack" % wire,
              bytes([b0]) + reply(wire, p0, a0, c0) + reply(wire, p1, a1, c1) + struct.pack("<i", -1))


# ---- fuzz-control ----
def frame(msg):
    return struct.pack("<I", len(msg)) + msg


def request(op, *extra, version=1):
    return fv(1, version) + fv(2, op) + b"".join(extra)


def control_seeds():
    w = lambda n, d: write("fuzz-control", n, d)
    # daemon side: byte 0 = 0
    add = fb(3, fb(1, "/images") + fb(2, "/work") + fb(3, "127.0.0.1") + fv(4, 2345) + fv(5, 4) + fv(6, 2))
    w("daemon-status-list", b"\0" + frame(request(1)) + frame(request(4)) + frame(request(5, fv(4, 7))) +
      frame(request(5)) + frame(request(2, add)) + frame(request(3, fv(4, 7))) + frame(request(3)))
    regions = fb(1, fv(1, 0x10000) + fv(2, 0x2000) + fv(3, 0)) + fb(1, fv(1, 0x20000) + fv(2, 0x1000) + fv(3, 0x4000))
    ho = frame(request(6, fb(5, regions + fv(2, 77) + fb(3, "vm"))))
    w("daemon-handoff", b"\0" + mark(2, UFFD, MEMFD) + ho + mark(0, 0) + frame(request(1)))
    w("daemon-handoff-devnull", b"\0" + mark(2, UFFD, DEVNULL) + ho)
    w("daemon-handoff-overlap", b"\0" + mark(2, UFFD, MEMFD) +
      frame(request(6, fb(5, regions + fb(1, fv(1, 0x11000) + fv(2, 0x1000) + fv(3, 0))))))
    w("daemon-fds-on-status", b"\0" + mark(1, DEVNULL) + frame(request(1)) + mark(0, 0) + frame(request(4)))
    w("daemon-bad-version", b"\0" + frame(request(1, version=2)) + frame(request(9)))
    w("daemon-malformed", b"\0" + frame(b"\x08") + frame(request(1)))
    w("daemon-oversize", b"\0" + struct.pack("<I", (1 << 20) + 1) + b"x" * 8)
    w("daemon-cut", b"\0" + frame(request(1))[:-1])

    # client side: byte 0 = 1, bytes 1-2 = five 3-bit ops; then the daemon's answers
    def ops(*o):
        v = 0
        for i, x in enumerate(o):
            v |= x << (3 * i)
        return b"\1" + struct.pack("<H", v)

    status = frame(fv(1, 1) + fv(2, 0) + fb(4, fv(1, 4242) + fd(2, 1.5) + fv(3, 1) + fv(4, 2) + fb(5, "ok") + fv(6, 0)))
    proc = fv(1, 100) + fv(2, 10) + fv(3, 5) + fv(4, 1) + fd(5, 2.5) + fv(6, 0) + fv(7, 1)
    sess = (fv(1, 7) + fv(2, 2) + fb(3, "criu") + fb(4, "/images") + fb(5, "/work") + fb(6, "/work/lazy-pages.socket") +
            fb(7, "10.0.0.1:2345") + fb(8, proc) + fb(8, proc) + fv(9, 3) + fd(12, 1.0) + fb(19, "done") + fb(20, "é" * 300))
    lst = frame(fv(1, 1) + fv(2, 0) + fb(5, sess) + fb(5, fv(1, 8) + fv(2, 1)))
    one = frame(fv(1, 1) + fv(2, 0) + fb(5, sess))
    err = frame(fv(1, 1) + fv(2, (-2) & (1 << 64) - 1) + fb(3, "no session 5"))
    sid = frame(fv(1, 1) + fv(2, 0) + fv(6, 9))
    w("client-status-list", ops(0, 1, 2, 3, 7) + status + lst + one + lst + err)
    w("client-add-rm-handoff", ops(4, 5, 6, 0, 0) + sid + frame(fv(1, 1) + fv(2, 0)) + sid + status + status)
    w("client-bad", ops(0, 0, 1, 0, 0) + frame(fv(1, 2) + fv(2, 0)) + frame(fv(1, 1) + fv(2, 5)) +
      struct.pack("<I", 1 << 21) + status)
    w("client-cut", ops(1, 0, 0, 0, 0) + lst[:-3])
    # the daemon answers and hangs up before it reads the request (a refused peer)
    refused = frame(fv(1, 1) + fv(2, (-1) & (1 << 64) - 1) + fb(3, "uid 1000 may not use this control socket"))
    w("client-refused", b"\1" + struct.pack("<H", 0x8000) + refused)


def main():
    images_seeds()
    restore_seeds()
    ps_seeds()
    control_seeds()
    for t in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, t))
        size = sum(os.path.getsize(os.path.join(CORPUS, t, f)) for f in files)
        print("%s: %d seeds, %d bytes" % (t, len(files), size))


if __name__ == "__main__":
    main()
