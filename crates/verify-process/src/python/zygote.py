# bluegreen zygote: a pre-started interpreter that forks one fresh child per startup check.
#
# It only forks and reaps; it never sees a check's request, output or report. Protocol: one
# JSON object per datagram on a SOCK_SEQPACKET socket at fd 3.
#   -> {"fork": T, "prefault": B} with four descriptors attached (SCM_RIGHTS): the child's
#      ends of its request, stdout, stderr and report pipes, made by bluegreen, which keeps
#      the others. B: prepare while waiting (a spare), or not (a check is waiting for it).
#   <- {"ready": true, "pid": P}                    once, at start
#   <- {"forked": T, "pid": P}                      the child is running (its setup follows)
#   <- {"exit": P, "status": E}                     child P was reaped and its group killed
# E is os.waitstatus_to_exitcode (negative = killed by that signal). End of input on fd 3
# means shut down: every child's group is killed first.
#
# A child is forked ahead of the check it serves (a *spare*): it moves to its own session,
# puts its pipes in place, rehearses the check on a throwaway module, writes a newline to
# its report pipe (ready), then blocks reading its request, which bluegreen writes straight
# into the request pipe. Its
# report goes straight back to bluegreen, which kills its group as soon as the report is
# whole. Keeping this process out of a check's path saves two process wake-ups per check.
import array
import ctypes
import fcntl
import gc
import inspect  # pre-imported: entrypoint checks use it
import re  # noqa: F401  (pre-imported: check.py finds assignment lines with it)
import resource
import select
import selectors
import shutil
import signal
import socket
import stat


def _bg_exitcode(status):
    # os.waitstatus_to_exitcode, which Python < 3.9 lacks.
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


_BG_CTL = 3
_BG_PIPES_PER_CHILD = 4
# How long a child that has reported waits to be killed by bluegreen before it exits.
_BG_LINGER = 1.0
# The resource limits of every check, [[name, value], ...] (argv[1], set by bluegreen).
_BG_LIMITS = json.loads(sys.argv[1])
# sandbox = "strict": {"scratch": parent of the children's scratch dirs, "landlock": bool,
# "read": [paths a child may read], "devices": [files it may also write]}; else None.
_BG_SANDBOX = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
_BG_LIBC = ctypes.CDLL(None, use_errno=True)
_BG_LIBC.syscall.restype = ctypes.c_long
_PR_SET_CHILD_SUBREAPER = 36
# Landlock (linux/landlock.h): system call numbers (the same on every architecture), rights.
_LL_CREATE_RULESET, _LL_ADD_RULE, _LL_RESTRICT_SELF = 444, 445, 446
_LL_READ = 1 | 4 | 8  # EXECUTE | READ_FILE | READ_DIR
_LL_FILE_READ = 1 | 4  # EXECUTE | READ_FILE


class _BgRulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _BgPathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _bg_syscall(*args):
    result = _BG_LIBC.syscall(*[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, "landlock: " + os.strerror(err))
    return result


def _bg_landlock_rules():
    # Opened once in the zygote (O_PATH), used by every child to build its own layer:
    # [(fd, rights)], the ABI's handled rights and scopes, and the rights for the scratch dir.
    abi = _BG_LIBC.syscall(
        ctypes.c_long(_LL_CREATE_RULESET), None, ctypes.c_long(0), ctypes.c_long(1)
    )  # LANDLOCK_CREATE_RULESET_VERSION: the ABI version, or -1
    if abi < 1:
        return None
    handled = (1 << 13) - 1
    if abi >= 2:
        handled |= 1 << 13  # REFER
    if abi >= 3:
        handled |= 1 << 14  # TRUNCATE
    if abi >= 5:
        handled |= 1 << 15  # IOCTL_DEV
    file_rights = handled & (1 | 2 | 4 | (1 << 14) | (1 << 15))
    rules = []
    for path, rights in [(p, _LL_READ) for p in _BG_SANDBOX["read"]] + [
        (p, file_rights) for p in _BG_SANDBOX["devices"]
    ]:
        try:
            opened = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        # Far above the descriptors a child puts in place (0-4).
        fd = fcntl.fcntl(opened, fcntl.F_DUPFD_CLOEXEC, 100)
        os.close(opened)
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= file_rights | _LL_FILE_READ
        rules.append((fd, rights))
    size = 24 if abi >= 6 else (16 if abi >= 4 else 8)
    scoped = 3 if abi >= 6 else 0  # ABSTRACT_UNIX_SOCKET | SIGNAL
    return rules, _BgRulesetAttr(handled, 0, scoped), size, handled


_BG_LANDLOCK = _bg_landlock_rules() if _BG_SANDBOX and _BG_SANDBOX["landlock"] else None


def _bg_confine():
    # In the child, before its request: it becomes the subreaper of whatever the check starts
    # (so orphans stay in its subtree and reach the zygote, which kills them, when it dies),
    # and under sandbox = "strict" gets its own scratch directory (TMPDIR, HOME) and a second
    # Landlock layer: no /proc, writes in that directory only.
    _BG_LIBC.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    if _BG_SANDBOX is None:
        return
    scratch = _bg_scratch_of(os.getpid())
    shutil.rmtree(scratch, ignore_errors=True)
    os.mkdir(scratch, 0o700)
    os.environ["TMPDIR"] = scratch
    os.environ["HOME"] = scratch
    if "tempfile" in sys.modules:
        sys.modules["tempfile"].tempdir = None
    if _BG_LANDLOCK is None:
        return
    rules, attr, size, handled = _BG_LANDLOCK
    ruleset = _bg_syscall(_LL_CREATE_RULESET, ctypes.byref(attr), size, 0)
    try:
        scratch_fd = os.open(scratch, os.O_PATH | os.O_CLOEXEC)
        for fd, rights in rules + [(scratch_fd, handled)]:
            rule = _BgPathBeneath(rights, fd)
            _bg_syscall(_LL_ADD_RULE, ruleset, 1, ctypes.byref(rule), 0)  # PATH_BENEATH
        os.close(scratch_fd)
        _bg_syscall(_LL_RESTRICT_SELF, ruleset, 0)
    finally:
        os.close(ruleset)
    for fd, _rights in rules:
        os.close(fd)


def _bg_scratch_of(pid):
    return os.path.join(_BG_SANDBOX["scratch"], f"check-{pid}")


_BG_WARM_UP_SOURCE = "def f(e):\n    return [x * 2 for x in e if x] + list(range(10))\n" * 40


def _bg_warm_target(event):
    return event


def _bg_warm_compile():
    compile(_BG_WARM_UP_SOURCE, "<bluegreen-warm-up>", "exec")


def _bg_warm_signature():
    inspect.signature(_bg_warm_target).bind(object())


def _bg_grow_heap():
    # glibc keeps what this frees: the check's compile finds the pages faulted in.
    compile(_BG_WARM_UP_SOURCE * 6, "<bluegreen-warm-up>", "exec")


def _bg_prefault(request_waiting):
    # Runs in the spare while it waits for a request: takes most of the copy-on-write page
    # faults a check causes (GC headers, allocator arenas, the import and signature code
    # paths) before the clock starts. None of it leaves state the candidate could observe.
    # It takes 10-20 ms; a spare whose request is already there skips what is left.
    steps = [gc.collect, _bg_warm_compile, _bg_warm_signature, _bg_rehearse]
    if _BG_KEEPING_ALLOCATOR:
        steps.append(_bg_grow_heap)
    for step in steps:
        if request_waiting():
            return
        step()


_BG_REHEARSAL_MODULE = "_bg_rehearsal"
_BG_REHEARSAL_SOURCE = (_BG_WARM_UP_SOURCE + "def process_event(event):\n    return event\n").encode()


def _bg_rehearse():
    # A dress rehearsal of the check on a throwaway module held in a memfd: decoding the
    # request, the loader's stat, bytecode-cache probe, read and exec, the entrypoint check
    # and encoding the report all run once here, so the check proper finds their code and
    # data already copied into this process (about 0.25 ms of a warm check). Everything it
    # creates is removed again.
    try:
        fd = os.memfd_create("bluegreen-rehearsal")
    except (AttributeError, OSError):
        return  # no memfd (not Linux): the check just starts colder
    argv = list(sys.argv)
    try:
        os.write(fd, _BG_REHEARSAL_SOURCE)
        path = "/proc/self/fd/%d" % fd
        request = json.loads(_bg_dumps({"staged": path, "root": "/", "path": []}))
        report = _bg_run_check(request["staged"], _BG_REHEARSAL_MODULE, "process_event")
        _bg_dumps(report).encode("utf-8", "replace")
    finally:
        sys.argv[:] = argv
        sys.modules.pop(_BG_REHEARSAL_MODULE, None)
        os.close(fd)
    gc.collect()  # the module's functions and globals form cycles


def _bg_apply_limits(limits):
    for name, value in limits:
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


def _bg_child(out_w, err_w, rep_w, req_r, base_path, prefault):
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()  # own session and process group: the whole group is killed afterwards
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.dup2(rep_w, 3)
    os.dup2(req_r, 4)
    keep = sorted(fd for fd, _rights in _BG_LANDLOCK[0]) if _BG_LANDLOCK else []
    start = 5
    for fd in keep + [1 << 16]:
        os.closerange(start, fd)
        start = fd + 1
    if prefault:
        _bg_prefault(lambda: bool(select.select([4], [], [], 0)[0]))
    # The limits are the same for every check of this zygote: applied while waiting. (Like
    # a cold check's interpreter start-up, the spare's preparation counts as CPU time.)
    _bg_apply_limits(_BG_LIMITS)
    _bg_confine()
    # Ready: a newline (JSON whitespace, so the report still parses) tells bluegreen that
    # this spare has done its preparation and will start at once.
    os.write(3, b"\n")
    # One line of JSON. Bluegreen keeps its end open: if this process dies before reading
    # the request, the unread bytes tell that no agent code ran.
    received = b""
    while not received.endswith(b"\n"):
        chunk = os.read(4, 65536)
        if not chunk:
            os._exit(0)  # a spare that was not needed (bluegreen closed the request pipe)
        received += chunk
    os.close(4)
    request = json.loads(received)
    os.chdir(request["root"])
    # The zygote never imported from these directories (nor any user package), so no finder
    # cache is stale and the check imports the parents afresh from the live tree.
    sys.path[:] = list(request["path"]) + base_path
    report_fd = _bg_take_report_fd()
    checker_pid = _bg_getpid()
    try:
        report = _bg_run_check(
            request["staged"], request["module"], request["entrypoint"] or "", request["package"]
        )
    except BaseException as exc:
        report = _bg_exception_report(exc, "")
    _bg_finish(report_fd, report, checker_pid, linger=_BG_LINGER)


# The allocator settings bluegreen started the zygote with (zygote.rs, ZYGOTE_ALLOCATOR) are
# for this process only: the agent and whatever it runs see the environment of a cold check.
_BG_KEEPING_ALLOCATOR = os.environ.get("MALLOC_TOP_PAD_") is not None
for _bg_name in ("PYTHONMALLOC", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_"):
    if _BG_KEEPING_ALLOCATOR:
        os.environ.pop(_bg_name, None)


def _bg_receive(ctl):
    # One datagram and the descriptors that came with it; (None, []) at end of input.
    fds = array.array("i")
    data, ancillary, _flags, _addr = ctl.recvmsg(
        65536, socket.CMSG_SPACE(_BG_PIPES_PER_CHILD * fds.itemsize)
    )
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(data), list(fds)


def _bg_kill_orphans(children):
    # The zygote is a subreaper, and so is every child: what a check started stays in the
    # child's subtree while the child lives, and is re-parented here when it dies. Any child
    # of the zygote it did not fork itself is such an orphan: killed (its own children
    # come here in turn, and go at the next reap).
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                pids = [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            continue
        for pid in pids:
            if pid not in children:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


def _bg_zygote_main():
    _BG_LIBC.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    os.chdir("/")  # started in a root only so a launcher picks the interpreter from there
    base_path = list(sys.path)
    ctl = socket.socket(fileno=_BG_CTL)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    selector = selectors.DefaultSelector()
    selector.register(ctl, selectors.EVENT_READ, "ctl")
    selector.register(wake_r, selectors.EVENT_READ, "wake")
    children = set()

    def send(message):
        ctl.send(json.dumps(message).encode("utf-8", "replace"))

    def fork(token, prefault, fds):
        if len(fds) != _BG_PIPES_PER_CHILD:
            raise ValueError("a fork request needs %d descriptors" % _BG_PIPES_PER_CHILD)
        req_r, out_w, err_w, rep_w = fds
        pid = os.fork()
        if pid == 0:
            try:
                ctl.detach()  # fd 3 becomes the report pipe; this object must not close it
                _bg_child(out_w, err_w, rep_w, req_r, base_path, prefault)
            finally:
                os._exit(70)
        for fd in fds:
            os.close(fd)
        children.add(pid)
        send({"forked": token, "pid": pid})

    def reap():
        reaped = False
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            reaped = True
            if pid not in children:
                continue  # an orphan of a check (see _bg_kill_orphans)
            try:
                os.killpg(pid, signal.SIGKILL)  # whatever it left in its group
            except OSError:
                pass
            children.discard(pid)
            send({"exit": pid, "status": _bg_exitcode(status)})
            if _BG_SANDBOX is not None:
                shutil.rmtree(_bg_scratch_of(pid), ignore_errors=True)
        if reaped:
            _bg_kill_orphans(children)

    def shutdown():
        for pid in children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
        os._exit(0)

    # Everything the zygote owns now lives as long as it does: keep the collector of every
    # child away from it (fewer pages to copy on write).
    gc.collect()
    gc.freeze()
    send({"ready": True, "pid": os.getpid()})
    while True:
        for key, _events in selector.select():
            if key.data == "ctl":
                message, fds = _bg_receive(ctl)
                if message is None:
                    shutdown()
                fork(message["fork"], message.get("prefault", True), fds)
            else:
                try:
                    while os.read(wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
        reap()


_bg_zygote_main()
