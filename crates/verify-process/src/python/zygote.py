# bluegreen zygote: a pre-started interpreter that forks one fresh child per startup check.
# Protocol (one JSON object per line): requests on fd 3, responses on fd 4.
#   -> {"id": N, "staged": ..., "module": ..., "entrypoint": ...|null, "root": ...,
#       "path": [...], "limits": [[resource, value], ...], "output_cap": N}
#   -> {"cancel": N}
#   <- {"ready": true, "pid": P}                      once, at start
#   <- {"id": N, "pid": P}                            right after the fork
#   <- {"id": N, "exit": E, "report": "...", "stdout": "...", "stderr": "...",
#       "stdout_total": N, "stderr_total": N}         as soon as the child's report is whole
#                                                     (its group is killed first; E is 0, the
#                                                     status it exits with next), or else
#                                                     when the child and its group are gone
# E is os.waitstatus_to_exitcode (negative = killed by that signal). End of input on fd 3
# means shut down: every running check group is killed first.
# To keep the fork off the critical path the zygote keeps one *spare* child forked ahead of
# time, already in its own session with its stdio pipes in place, blocked reading its request;
# a request goes to the spare and the next spare is forked once a check has finished.
import gc
import resource
import selectors
import signal

import inspect  # noqa: F401  (pre-imported: entrypoint checks use it)
import re  # noqa: F401


def _bg_exitcode(status):
    # os.waitstatus_to_exitcode, which Python < 3.9 lacks.
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


_BG_CTL_IN = 3
_BG_CTL_OUT = 4
_BG_REPORT_CAP = 65536


def _bg_send(message):
    data = (json.dumps(message) + "\n").encode("utf-8", "replace")
    while data:
        data = data[os.write(_BG_CTL_OUT, data):]


_BG_WARM_UP_SOURCE = "def f(e):\n    return [x * 2 for x in e if x] + list(range(10))\n" * 40


def _bg_warm_target(event):
    return event


def _bg_prefault():
    # Runs in the spare while it waits for a request: takes most of the copy-on-write page
    # faults a check causes (GC headers, allocator arenas, the import and signature code
    # paths) before the clock starts. None of it leaves state the candidate could observe.
    gc.collect()
    compile(_BG_WARM_UP_SOURCE, "<bluegreen-warm-up>", "exec")
    inspect.signature(_bg_warm_target).bind(object())
    importlib.util.module_from_spec(importlib.util.spec_from_loader("_bg_warm_up", loader=None))
    if _BG_KEEPING_ALLOCATOR:
        # glibc keeps what this frees: the check's compile finds the pages faulted in.
        compile(_BG_WARM_UP_SOURCE * 6, "<bluegreen-warm-up>", "exec")


def _bg_child(out_w, err_w, rep_w, req_r, base_path):
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()  # own session and process group: the whole group is killed afterwards
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.dup2(rep_w, 3)
    os.dup2(req_r, 4)
    os.closerange(5, 1 << 16)
    _bg_prefault()
    chunks = []
    while True:
        chunk = os.read(4, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(4)
    if not chunks:
        os._exit(0)  # a spare that was not needed (the zygote shut down)
    request = json.loads(b"".join(chunks))
    for name, value in request["limits"]:
        kind = getattr(resource, name)
        _soft, hard = resource.getrlimit(kind)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        soft = value
        if name == "RLIMIT_CPU" and hard == resource.RLIM_INFINITY:
            hard = value + 1  # SIGXCPU at the soft limit, SIGKILL one second later
        else:
            hard = value
        resource.setrlimit(kind, (soft, hard))
    os.chdir(request["root"])
    # The zygote never imported from these directories, so no finder cache is stale.
    sys.path[:] = list(request["path"]) + base_path
    report_fd = _bg_take_report_fd()
    checker_pid = _bg_getpid()
    try:
        report = _bg_run_check(request["staged"], request["module"], request["entrypoint"] or "")
    except BaseException as exc:
        report = _bg_exception_report(exc, "")
    _bg_finish(report_fd, report, checker_pid)


# The allocator settings bluegreen started the zygote with (zygote.rs, ZYGOTE_ALLOCATOR) are
# for this process only: the agent and whatever it runs see the environment of a cold check.
_BG_KEEPING_ALLOCATOR = os.environ.get("MALLOC_TOP_PAD_") is not None
for _bg_name in ("PYTHONMALLOC", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_"):
    if _BG_KEEPING_ALLOCATOR:
        os.environ.pop(_bg_name, None)


def _bg_zygote_main():
    os.chdir("/")  # started in a root only so a launcher picks the interpreter from there
    base_path = list(sys.path)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    selector = selectors.DefaultSelector()
    selector.register(_BG_CTL_IN, selectors.EVENT_READ, "ctl")
    selector.register(wake_r, selectors.EVENT_READ, "wake")
    checks = {}
    by_pid = {}
    spare = []  # at most one pre-forked child
    pending = bytearray()

    def answer(check, exit_code):
        check["answered"] = True
        if not check["cancelled"]:
            send_result(check, exit_code)
        # The next spare is forked now that a check is over, off its critical path.
        if not spare:
            spare.append(fork_spare())

    def send_result(check, exit_code):
        bufs = check["bufs"]
        _bg_send(
            {
                "id": check["id"],
                "exit": exit_code,
                "report": bytes(bufs["report"]).decode("utf-8", "replace"),
                "stdout": bytes(bufs["stdout"]).decode("utf-8", "replace"),
                "stderr": bytes(bufs["stderr"]).decode("utf-8", "replace"),
                "stdout_total": check["totals"]["stdout"],
                "stderr_total": check["totals"]["stderr"],
            }
        )

    def finish_if_done(check):
        if check["status"] is None or check["fds"]:
            return
        checks.pop(check["id"], None)
        if not check["answered"]:
            answer(check, _bg_exitcode(check["status"]))

    def read_into(check, fd):
        # One read from a check's pipe: "data", "empty" (nothing now) or "eof" (closed).
        stream = check["fds"][fd]
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return "empty"
        if not data:
            selector.unregister(fd)
            os.close(fd)
            del check["fds"][fd]
            return "eof"
        cap = _BG_REPORT_CAP if stream == "report" else check["cap"]
        buf = check["bufs"][stream]
        buf.extend(data)
        if len(buf) > cap:
            del buf[: len(buf) - cap]  # keep the tail: tracebacks end there
        check["totals"][stream] += len(data)
        return "data"

    def answer_on_report(check):
        # The checker writes its report as its last act before os._exit(0), after flushing
        # its output. Once the report is whole, the verdict is known: kill the group now and
        # answer, instead of waiting for the checker's address space to be torn down (about
        # a millisecond). Its reaping and the rest of its pipes are handled as before.
        try:
            json.loads(bytes(check["bufs"]["report"]))
        except ValueError:
            return
        try:
            os.killpg(check["pid"], signal.SIGKILL)
        except OSError:
            pass
        # Everything the checker printed is in its pipes already (it flushed first).
        for fd, stream in list(check["fds"].items()):
            if stream != "report":
                while read_into(check, fd) == "data":
                    pass
        answer(check, 0)

    def reap():
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if spare and spare[0]["pid"] == pid:  # the spare died: the next check forks one
                for fd in list(spare[0]["fds"]) + [spare[0]["req_w"]]:
                    os.close(fd)
                spare.clear()
                continue
            check = by_pid.pop(pid, None)
            if check is not None:
                check["status"] = status
                try:
                    os.killpg(pid, signal.SIGKILL)  # grandchildren left in its group
                except OSError:
                    pass
                finish_if_done(check)

    def fork_spare():
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        rep_r, rep_w = os.pipe()
        req_r, req_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                _bg_child(out_w, err_w, rep_w, req_r, base_path)
            finally:
                os._exit(70)
        for fd in (out_w, err_w, rep_w, req_r):
            os.close(fd)
        return {
            "pid": pid,
            "req_w": req_w,
            "fds": {out_r: "stdout", err_r: "stderr", rep_r: "report"},
        }

    def start(request, raw):
        child = spare.pop() if spare else fork_spare()
        pid = child["pid"]
        # Hand the request over first: the child starts while the bookkeeping below runs.
        # (Whatever it writes or however it ends meanwhile waits in its pipes and for reap(),
        # which runs only after this returns.)
        data = raw
        try:
            while data:
                data = data[os.write(child["req_w"], data):]
        except OSError:
            pass  # the child died; reap() reports it
        os.close(child["req_w"])
        check = {
            "id": request["id"],
            "pid": pid,
            "cap": int(request.get("output_cap", 65536)),
            "fds": child["fds"],
            "bufs": {"stdout": bytearray(), "stderr": bytearray(), "report": bytearray()},
            "totals": {"stdout": 0, "stderr": 0, "report": 0},
            "status": None,
            "cancelled": False,
            "answered": False,
        }
        for fd in check["fds"]:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ, check)
        checks[request["id"]] = check
        by_pid[pid] = check
        _bg_send({"id": request["id"], "pid": pid})

    def shutdown():
        for child in spare:
            os.close(child["req_w"])
        for check in list(checks.values()):
            try:
                os.killpg(check["pid"], signal.SIGKILL)
            except OSError:
                pass
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
        os._exit(0)

    def handle(message, raw):
        if "cancel" in message:
            check = checks.get(message["cancel"])
            if check is not None:
                check["cancelled"] = True
                try:
                    os.killpg(check["pid"], signal.SIGKILL)
                except OSError:
                    pass
        else:
            start(message, raw)

    # Everything the zygote owns now lives as long as it does: keep the collector of every
    # child away from it (fewer pages to copy on write).
    gc.collect()
    gc.freeze()
    spare.append(fork_spare())
    _bg_send({"ready": True, "pid": os.getpid()})
    while True:
        for key, _events in selector.select():
            if key.data == "ctl":
                data = os.read(_BG_CTL_IN, 65536)
                if not data:
                    shutdown()
                pending.extend(data)
                while b"\n" in pending:
                    line, _, rest = bytes(pending).partition(b"\n")
                    pending[:] = rest
                    if line.strip():
                        handle(json.loads(line), line)
            elif key.data == "wake":
                try:
                    while os.read(wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
                reap()
            else:
                check = key.data
                if key.fd not in check["fds"]:
                    continue  # closed earlier in this round
                stream = check["fds"][key.fd]
                if read_into(check, key.fd) == "eof":
                    finish_if_done(check)
                elif stream == "report" and not check["answered"]:
                    answer_on_report(check)
        reap()


_bg_zygote_main()
