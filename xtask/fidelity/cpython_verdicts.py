"""Ground truth for `cargo xtask fidelity`: CPython's own compile() verdict per file.

Usage: python3 cpython_verdicts.py LISTFILE
LISTFILE holds one path per line. Prints one JSON object per line, in input order:
{"path": ..., "ok": bool, "error": "Type: message" | null, "line": int | null}
Runs in one process so interpreter start-up is paid once. Every exception counts as a
rejection (compile() raises SyntaxError, but also ValueError/UnicodeDecodeError on some bytes).
"""
import json
import sys
import warnings


def main():
    warnings.simplefilter("ignore")  # SyntaxWarning/DeprecationWarning are not rejections
    with open(sys.argv[1], encoding="utf-8") as listing:
        paths = [line.rstrip("\n") for line in listing if line.strip()]
    out = sys.stdout
    for path in paths:
        with open(path, "rb") as f:
            source = f.read()
        try:
            compile(source, path, "exec", dont_inherit=True)
            verdict = {"path": path, "ok": True, "error": None, "line": None}
        except (SyntaxError, ValueError, UnicodeError, LookupError, MemoryError, RecursionError) as e:
            line = getattr(e, "lineno", None)
            msg = getattr(e, "msg", None) or str(e)
            verdict = {"path": path, "ok": False, "error": f"{type(e).__name__}: {msg}", "line": line}
        out.write(json.dumps(verdict) + "\n")


if __name__ == "__main__":
    main()
