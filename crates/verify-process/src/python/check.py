# bluegreen python-startup check, shared by cold mode (run with `python -I -B -c`) and the
# zygote (warm mode). It imports the staged file as a module, checks the entrypoint and
# writes one JSON report to a private file descriptor, then leaves with os._exit so that
# threads or atexit hooks started by the agent cannot keep the check alive.
import importlib.machinery
import importlib.util
import json
import os
import sys
import time
import traceback

_BG_MESSAGE_LIMIT = 2000
_BG_TRACEBACK_LIMIT = 4000
# Bound before any agent code runs, so an agent that monkeypatches json or os cannot break
# the report.
_bg_dumps = json.dumps
_bg_write = os.write
_bg_exit = os._exit
_bg_getpid = os.getpid
_bg_sleep = time.sleep


def _bg_exception_report(exc, staged):
    line = 0
    column = 0
    if isinstance(exc, SyntaxError) and exc.filename == staged:
        line = exc.lineno or 0
        column = exc.offset or 0
    else:
        # The innermost frame that lies in the staged file: for an error raised in a sibling
        # module this is the line of the staged file that imported or called it.
        for frame in traceback.extract_tb(exc.__traceback__):
            if frame.filename == staged:
                line = frame.lineno or 0
                colno = getattr(frame, "colno", None)
                column = colno + 1 if colno is not None else 0
    try:
        message = traceback.format_exception_only(type(exc), exc)[-1].strip()
        details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:
        message = type(exc).__name__
        details = ""
    return {
        "ok": False,
        "kind": "exception",
        "line": line,
        "column": column,
        "message": message[:_BG_MESSAGE_LIMIT],
        "traceback": details[-_BG_TRACEBACK_LIMIT:],
    }


def _bg_assignment_line(staged, name):
    import re

    pattern = re.compile(r"^" + re.escape(name) + r"\s*(:[^=]*)?=")
    try:
        with open(staged, encoding="utf-8", errors="replace") as source:
            for number, text in enumerate(source, 1):
                if pattern.match(text):
                    return number
    except OSError:
        pass
    return 0


def _bg_plainly_takes_one_argument(target):
    # For a plain function (no __wrapped__ or __signature__ for inspect to follow), whether
    # one positional argument binds, read off its code object: what
    # inspect.signature(target).bind(x) answers, without its ~0.1 ms in a fresh process.
    # Anything else, and every refusal, goes through inspect (which words the message).
    if type(target) is not type(_bg_plainly_takes_one_argument):
        return False
    if "__wrapped__" in target.__dict__ or "__signature__" in target.__dict__:
        return False
    code = target.__code__
    positional = code.co_argcount  # positional-only included
    required = positional - len(target.__defaults__ or ())
    kw_defaults = target.__kwdefaults__ or {}
    kw_only = code.co_varnames[positional : positional + code.co_kwonlyargcount]
    if any(kw not in kw_defaults for kw in kw_only):
        return False
    takes_varargs = bool(code.co_flags & 0x04)  # CO_VARARGS
    return required <= 1 and (positional >= 1 or takes_varargs)


def _bg_check_entrypoint(module, name, staged):
    def fail(message, line=0):
        return {"ok": False, "kind": "entrypoint", "line": line, "column": 0, "message": message}

    try:
        target = getattr(module, name)
    except AttributeError:
        return fail("entrypoint %r is not defined at module level" % name)
    except BaseException as exc:
        return _bg_exception_report(exc, staged)
    if not callable(target):
        return fail(
            "entrypoint %r is not callable (it is %s)" % (name, type(target).__name__),
            _bg_assignment_line(staged, name),
        )
    if _bg_plainly_takes_one_argument(target):
        return {"ok": True}
    import inspect

    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return {"ok": True}  # no introspectable signature (some builtins): cannot tell
    try:
        signature.bind(object())
    except TypeError:
        code = getattr(target, "__code__", None)
        line = code.co_firstlineno if code is not None and code.co_filename == staged else 0
        return fail(
            "entrypoint %r must accept one positional argument, but its signature is %s%s"
            % (name, name, signature),
            line,
        )
    return {"ok": True}


def _bg_parent_package(parent_name, directory):
    # The parents are imported for real, from the live tree, as `import a.b.c` would. A
    # parent found elsewhere on sys.path would not hold the target: production could not
    # import it under this name either.
    parent = importlib.import_module(parent_name)
    here = os.path.realpath(directory)
    paths = list(getattr(parent, "__path__", ()))
    if not any(os.path.realpath(p) == here for p in paths):
        where = f"the target's directory {directory}"
        raise ImportError(f"package {parent_name!r} is not {where} but {paths}")
    return parent


def _bg_run_check(staged, module_name, entrypoint, is_package=False):
    """Imports `staged` as `module_name` the way production imports the agent: parents
    first, then the staged bytes under the dotted name, with the package context set."""
    staged = os.path.abspath(staged)
    sys.argv[:] = [staged]
    sys.dont_write_bytecode = True  # never leave __pycache__ entries for staged files
    directory = os.path.dirname(staged)
    try:
        # The directory that holds the target as a name: a package's __init__.py is its
        # directory, which lies in the parent package's.
        parent_name, _, leaf = module_name.rpartition(".")
        home = os.path.dirname(directory) if is_package else directory
        parent = _bg_parent_package(parent_name, home) if parent_name else None
        # The staged name is not a module name and does not end in .py, so the loader is
        # chosen explicitly; tracebacks then point into the staged file.
        loader = importlib.machinery.SourceFileLoader(module_name, staged)
        spec = importlib.util.spec_from_file_location(
            module_name,
            staged,
            loader=loader,
            submodule_search_locations=[directory] if is_package else None,
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        loader.exec_module(module)
        if parent is not None:
            setattr(parent, leaf, module)  # as the import system does once it is loaded
    except BaseException as exc:  # SystemExit and KeyboardInterrupt fail the check too
        return _bg_exception_report(exc, staged)
    if entrypoint:
        return _bg_check_entrypoint(module, entrypoint, staged)
    return {"ok": True}


def _bg_finish(report_fd, report, checker_pid, linger=0.0):
    if _bg_getpid() != checker_pid:
        # A process the agent forked at import time and that carried on: only the checking
        # process reports.
        _bg_exit(0)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    try:
        data = _bg_dumps(report).encode("utf-8", "replace")
        while data:
            data = data[_bg_write(report_fd, data):]
        if linger:
            # Warm mode: bluegreen kills this process as soon as the report is whole. Exiting
            # instead would tear the address space down on the CPU bluegreen is about to be
            # woken on, delaying the verdict by about half a millisecond.
            _bg_sleep(linger)
    finally:
        _bg_exit(0)


def _bg_take_report_fd():
    # Keep the report channel out of the agent's way: fd 3 is freed for its own files and
    # the duplicate is not inherited by processes it starts.
    report_fd = os.dup(3)
    os.close(3)
    return report_fd


def _bg_cold_main():
    checker_pid = _bg_getpid()
    report_fd = _bg_take_report_fd()
    staged, module_name, entrypoint, is_package = sys.argv[1:5]
    sys.path[:0] = sys.argv[5:]
    try:
        report = _bg_run_check(staged, module_name, entrypoint, is_package == "package")
    except BaseException as exc:
        report = _bg_exception_report(exc, "")
    _bg_finish(report_fd, report, checker_pid)
