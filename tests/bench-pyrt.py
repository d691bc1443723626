#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""bench-pyrt: a Python runtime for the warm-restore benchmark (tests/bench-app.sh --warm).

It imports a hundred modules of Debian's Python (about 50 MiB of objects,
code and strings spread over its heap), then answers requests on a TCP
port: each line "GET ..." gets one line back, a SHA-256 over the names,
types, docstrings and code sizes of everything those modules define, the
same every time. The first request after a restore touches most of the
heap in the interpreter's own order: a working set that no address order
predicts.

  bench-pyrt.py --port P [--ready FILE]   serve (FILE gets the digest once listening)
  bench-pyrt.py --digest                  print the digest and exit
"""
import argparse
import hashlib
import importlib
import os
import socket
import sys
import warnings

MODULES = [
    "asyncio", "email.mime.multipart", "email.parser", "http.server", "http.client", "xml.etree.ElementTree",
    "xml.dom.minidom", "json", "decimal", "unittest", "sqlite3", "argparse", "logging.handlers",
    "urllib.request", "ssl", "csv", "datetime", "typing", "inspect", "pydoc", "difflib", "tarfile", "zipfile",
    "multiprocessing", "concurrent.futures", "ctypes", "xmlrpc.server", "smtplib", "imaplib", "ftplib",
    "mailbox", "configparser", "statistics", "fractions", "pickle", "shelve", "pydoc_data.topics",
    "lib2to3.pygram", "tomllib", "zoneinfo", "ipaddress", "uuid", "secrets", "hmac", "gettext", "locale",
    "calendar", "textwrap", "sched", "selectors", "socketserver", "wsgiref.simple_server", "doctest", "pdb",
    "profile", "cProfile", "pstats", "timeit", "trace", "tracemalloc", "dataclasses", "graphlib", "cmath",
    "random", "plistlib", "netrc", "mimetypes", "base64", "quopri", "html.parser", "dbm", "gzip", "bz2",
    "lzma", "shutil", "tempfile", "platform", "sysconfig", "setuptools", "pkg_resources", "yaml", "requests",
]


def load():
    mods = []
    for name in MODULES:
        try:
            mods.append(importlib.import_module(name))
        except Exception:  # a module this Python lacks: the digest says which were there
            pass
    return mods


def digest(mods):
    h = hashlib.sha256()
    for m in mods:
        h.update(m.__name__.encode())
        for name in sorted(vars(m)):
            if name.startswith("__"):
                continue
            obj = vars(m)[name]
            h.update(name.encode())
            h.update(type(obj).__name__.encode())
            doc = getattr(obj, "__doc__", None) if not isinstance(obj, (str, bytes, int, float)) else None
            if isinstance(doc, str):
                h.update(doc.encode("utf-8", "replace"))
            code = getattr(obj, "__code__", None) if callable(obj) else None
            if hasattr(code, "co_code"):
                h.update(len(code.co_code).to_bytes(4, "little"))
            if isinstance(obj, type):
                for attr in sorted(vars(obj)):
                    h.update(attr.encode())
            if isinstance(obj, dict) and len(obj) < 100000:
                for k in sorted(obj, key=str):
                    v = obj[k]
                    h.update(str(k).encode("utf-8", "replace"))
                    if isinstance(v, str):
                        h.update(v.encode("utf-8", "replace"))
    return h.hexdigest()


def serve(port, ready, mods):
    lsk = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsk.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsk.bind(("127.0.0.1", port))
    lsk.listen(16)
    if ready:
        with open(ready + ".tmp", "w") as f:
            f.write(digest(mods) + "\n")
        os.rename(ready + ".tmp", ready)
    while True:
        c, _ = lsk.accept()
        with c, c.makefile("rb") as rf:
            for line in rf:
                if not line.startswith(b"GET"):
                    break
                c.sendall((digest(mods) + "\n").encode())


def main():
    warnings.simplefilter("ignore")
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int)
    ap.add_argument("--ready")
    ap.add_argument("--digest", action="store_true")
    a = ap.parse_args()
    mods = load()
    if a.digest:
        print(digest(mods))
        return 0
    if not a.port:
        ap.error("--port or --digest")
    serve(a.port, a.ready, mods)
    return 0


if __name__ == "__main__":
    sys.exit(main())
