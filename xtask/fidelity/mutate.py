"""Deterministic mutant generator for `cargo xtask fidelity` (corpus 2).

Usage: python3 mutate.py LISTFILE OUTDIR COUNT SEED

Reads stdlib paths from LISTFILE, keeps files CPython accepts (UTF-8, < 40 KB), and writes
COUNT mutants to OUTDIR as NNNNN_<operator>.py, round-robin over the operators below, each
from a file and position chosen by random.Random(SEED, index). Same inputs, same mutants.
Prints the number of mutants written. A mutant may still be valid Python (for example an
invalid character that lands in a string): the ground truth decides, not the operator name.
"""
import io
import os
import random
import re
import sys
import tokenize
import warnings


def tokens_of(text):
    try:
        return list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return []


def offset_of(lines_start, row, col):
    return lines_start[row - 1] + col


def line_starts(text):
    starts = [0]
    for i, ch in enumerate(text):
        if ch == "\n":
            starts.append(i + 1)
    return starts


def pick_token(rng, text, pred):
    toks = [t for t in tokens_of(text) if pred(t)]
    if not toks:
        return None
    return rng.choice(toks)


def remove_token(rng, text, pred):
    tok = pick_token(rng, text, pred)
    if tok is None:
        return None
    starts = line_starts(text)
    a = offset_of(starts, *tok.start)
    b = offset_of(starts, *tok.end)
    return text[:a] + text[b:]


def drop_colon(rng, text):
    return remove_token(rng, text, lambda t: t.type == tokenize.OP and t.string == ":")


def drop_paren(rng, text):
    return remove_token(rng, text, lambda t: t.type == tokenize.OP and t.string in ")]}")


def drop_token(rng, text):
    return remove_token(rng, text, lambda t: t.type in (tokenize.NAME, tokenize.OP, tokenize.NUMBER))


def break_indent(rng, text):
    lines = text.split("\n")
    idx = [i for i, l in enumerate(lines) if l.startswith("    ") and l.strip() and not l.strip().startswith("#")]
    if not idx:
        return None
    i = rng.choice(idx)
    choice = rng.randrange(3)
    if choice == 0:
        lines[i] = " " + lines[i]
    elif choice == 1:
        lines[i] = lines[i][1:]
    else:
        lines[i] = "\t" + lines[i][8:] if lines[i].startswith("        ") else "\t" + lines[i][4:]
    return "\n".join(lines)


def append_module_line(text, line):
    if not text.endswith("\n"):
        text += "\n"
    return text + line + "\n"


def move_outside_scope(rng, text):
    stmts = re.findall(r"^[ \t]+((?:return|yield|await)\b[^\n#]*?)\s*$", text, re.MULTILINE)
    stmts = [s for s in stmts if s.count("(") == s.count(")") and s.count("[") == s.count("]") and s.count("{") == s.count("}") and not s.endswith("\\")]
    if not stmts:
        stmts = ["return None", "yield 1", "await x"]
    stmt = rng.choice(stmts)
    if rng.randrange(2) == 0:
        return append_module_line(text, stmt)
    return append_module_line(text, "class _Mutant:\n    " + stmt)


def duplicate_parameter(rng, text):
    matches = list(re.finditer(r"^([ \t]*(?:async[ \t]+)?def[ \t]+\w+\()([A-Za-z_]\w*)([,)])", text, re.MULTILINE))
    if not matches:
        return None
    m = rng.choice(matches)
    return text[: m.start()] + m.group(1) + m.group(2) + ", " + m.group(2) + m.group(3) + text[m.end():]


def late_future(rng, text):
    feature = rng.choice(["annotations", "annotations", "division", "generator_stop"])
    lines = text.split("\n")
    code = [i for i, l in enumerate(lines) if re.match(r"(import|from|def|class|[A-Za-z_]\w* =)", l)]
    if code and rng.randrange(2) == 0:
        i = rng.choice(code)
        lines.insert(i + 1 if not lines[i].rstrip().endswith(("(", ":", "\\", ",")) else i, "from __future__ import " + feature)
        return "\n".join(lines)
    return append_module_line(text, "from __future__ import " + feature)


BAD_ENCODINGS = ["utf-9", "latin-2x", "foobar", "uft-8", "ascii", "cp1252", "latin-1", "koi8-r", "utf8"]


def corrupt_cookie(rng, text):
    data = text.encode("utf-8")
    enc = rng.choice(BAD_ENCODINGS)
    m = re.search(rb"coding[:=][ \t]*([-\w.]+)", b"\n".join(data.split(b"\n")[:2]))
    if m and rng.randrange(2) == 0:
        return data[: m.start(1)] + enc.encode() + data[m.end(1):]
    mode = rng.randrange(3)
    cookie = f"# -*- coding: {enc} -*-\n".encode()
    if mode == 0:
        return cookie + data
    if mode == 1:
        return b"\xef\xbb\xbf" + cookie + data
    return b"#!/usr/bin/env python3\n" + cookie + data


INVALID_CHARS = ["$", "?", "`", "\u20ac", "\u00a0", "\uff01", "\u2019", "\u00b7", "!", "\u200b"]


def insert_invalid_char(rng, text):
    lines = text.split("\n")
    idx = [i for i, l in enumerate(lines) if l.strip() and not l.strip().startswith("#")]
    if not idx:
        return None
    i = rng.choice(idx)
    line = lines[i]
    pos = rng.randrange(len(line) - len(line.lstrip()), len(line) + 1)
    lines[i] = line[:pos] + rng.choice(INVALID_CHARS) + line[pos:]
    return "\n".join(lines)


def nonlocal_misuse(rng, text):
    if rng.randrange(2) == 0:
        return append_module_line(text, "nonlocal " + rng.choice(["x", "os", "sys", "_unbound"]))
    matches = list(re.finditer(r"^def[ \t]+\w+\([^)\n]*\)[^:\n]*:[ \t]*\n([ \t]+)", text, re.MULTILINE))
    if not matches:
        return append_module_line(text, "nonlocal x")
    m = rng.choice(matches)
    return text[: m.end(1)] + "nonlocal _mutant_unbound\n" + m.group(1) + text[m.end(1):]


def walrus_in_comprehension_iterable(rng, text):
    toks = tokens_of(text)
    depth = 0
    spots = []
    for i, t in enumerate(toks):
        if t.type == tokenize.OP and t.string in "([{":
            depth += 1
        elif t.type == tokenize.OP and t.string in ")]}":
            depth -= 1
        elif t.type == tokenize.NAME and t.string == "in" and depth > 0 and i + 2 < len(toks):
            nxt, after = toks[i + 1], toks[i + 2]
            if nxt.type == tokenize.NAME and (after.string in (")", "]", "}", "if", "for")):
                spots.append(nxt)
    if not spots:
        return append_module_line(text, "_m = [y for y in (_w := range(3))]")
    tok = rng.choice(spots)
    starts = line_starts(text)
    a = offset_of(starts, *tok.start)
    b = offset_of(starts, *tok.end)
    return text[:a] + "(_w := " + tok.string + ")" + text[b:]


def unterminated_string(rng, text):
    tok = pick_token(rng, text, lambda t: t.type == tokenize.STRING and t.start[0] == t.end[0] and len(t.string) >= 2 and not t.string.endswith(('"""', "'''")))
    if tok is None:
        return None
    starts = line_starts(text)
    b = offset_of(starts, *tok.end)
    return text[: b - 1] + text[b:]


def loop_control_outside(rng, text):
    return append_module_line(text, rng.choice(["break", "continue", "if True:\n    break", "def _m():\n    continue"]))


def duplicate_keyword_argument(rng, text):
    matches = list(re.finditer(r"\w\(([A-Za-z_]\w*)=", text))
    if not matches:
        return None
    m = rng.choice(matches)
    return text[: m.end()] + "None, " + m.group(1) + "=" + text[m.end():]


def await_in_sync_function(rng, text):
    matches = list(re.finditer(r"^([ \t]*)def[ \t]+\w+\([^)\n]*\)[^:\n]*:[ \t]*\n([ \t]+)", text, re.MULTILINE))
    if not matches:
        return None
    m = rng.choice(matches)
    stmt = rng.choice(["await x", "[(yield) for _ in ()]", "x = [await y for y in z]", "async with a: pass", "yield from x"])
    return text[: m.end(2)] + stmt + "\n" + m.group(2) + text[m.end(2):]


def global_after_use(rng, text):
    """Declare a name `global` after the function already used it."""
    matches = list(re.finditer(r"^([ \t]+)([A-Za-z_]\w*)[ \t]*(?:=|\+=|\()[^\n]*\n", text, re.MULTILINE))
    if not matches:
        return None
    m = rng.choice(matches)
    if m.group(2) in ("if", "while", "for", "return", "print", "assert", "del", "yield", "with", "elif", "not", "await", "raise"):
        return None
    return text[: m.end()] + m.group(1) + "global " + m.group(2) + "\n" + text[m.end():]


def bare_except_first(rng, text):
    """Turn a typed handler that has a successor into a bare `except:`."""
    matches = list(re.finditer(r"^([ \t]*)except[ \t]+[^\n:]+:", text, re.MULTILINE))
    if not matches:
        return None
    m = rng.choice(matches)
    return text[: m.start()] + m.group(1) + "except:" + text[m.end():]


def pep701_fstring(rng, text):
    """Reuse the outer quote inside an f-string replacement field (valid only from 3.12)."""
    toks = [t for t in tokens_of(text) if t.type == tokenize.STRING and t.string[:1] in "fF" and "{" in t.string]
    if not toks:
        return append_module_line(text, 'x = f"{"nested"}"')
    tok = rng.choice(toks)
    quote = tok.string[1]
    starts = line_starts(text)
    a = offset_of(starts, *tok.start)
    b = offset_of(starts, *tok.end)
    new = tok.string.replace("{", "{" + quote + quote + " + ", 1) if rng.randrange(2) else tok.string.replace("{", "{'\\n' + ", 1)
    return text[:a] + new + text[b:]


def drop_async(rng, text):
    """`async def` -> `def`: its awaits, async fors and async withs are now misplaced."""
    matches = list(re.finditer(r"async[ \t]+def\b", text))
    if not matches:
        return append_module_line(text, "def _m():\n    await x")
    m = rng.choice(matches)
    return text[: m.start()] + "def" + text[m.end():]


def retab_block(rng, text):
    """Re-indent one line with a tab (consistent or not, the ground truth decides)."""
    lines = text.split("\n")
    idx = [i for i, l in enumerate(lines) if l.startswith("    ") and l.strip() and not l.lstrip().startswith("#")]
    if not idx:
        return None
    i = rng.choice(idx)
    lines[i] = "\t" + lines[i][4:]
    return "\n".join(lines)


OPERATORS = [
    drop_colon,
    drop_paren,
    drop_token,
    break_indent,
    move_outside_scope,
    duplicate_parameter,
    late_future,
    corrupt_cookie,
    insert_invalid_char,
    nonlocal_misuse,
    walrus_in_comprehension_iterable,
    unterminated_string,
    loop_control_outside,
    duplicate_keyword_argument,
    await_in_sync_function,
    global_after_use,
    bare_except_first,
    pep701_fstring,
    drop_async,
    retab_block,
]


def main():
    warnings.simplefilter("ignore")
    listfile, outdir, count, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    with open(listfile, encoding="utf-8") as f:
        paths = sorted(l.rstrip("\n") for l in f if l.strip())
    sources = []
    for p in paths:
        try:
            with open(p, "rb") as f:
                data = f.read()
            if len(data) > 40_000 or b"\0" in data:
                continue
            text = data.decode("utf-8")
            compile(data, p, "exec", dont_inherit=True)
        except Exception:
            continue
        sources.append((p, text))
    os.makedirs(outdir, exist_ok=True)
    written = 0
    index = 0
    attempts = 0
    while written < count and attempts < count * 4:
        attempts += 1
        op = OPERATORS[index % len(OPERATORS)]
        rng = random.Random(seed * 1_000_003 + attempts)
        _path, text = rng.choice(sources)
        mutant = op(rng, text)
        index += 1
        if mutant is None:
            continue
        data = mutant if isinstance(mutant, bytes) else mutant.encode("utf-8")
        with open(os.path.join(outdir, f"{written:05d}_{op.__name__}.py"), "wb") as f:
            f.write(data)
        written += 1
    print(written)


if __name__ == "__main__":
    main()
