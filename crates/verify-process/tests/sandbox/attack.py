# A hostile candidate: tries everything the sandbox must refuse, then reports what happened
# (as the failure message of the check: "ATTACKS {json}").
import ctypes
import json
import os
import shutil

TEST_PID = int("@TEST_PID@")
TOKEN = b"@TOKEN@"
PTRACE = "@PTRACE@".startswith("yes")
ROOT = os.getcwd()
TARGET = os.path.join(ROOT, "services/agents/alpha.py")
RESULTS = {}


def attempt(name, action):
    try:
        RESULTS[name] = f"succeeded: {action()}"
    except BaseException as exc:
        RESULTS[name] = f"failed: {type(exc).__name__} {getattr(exc, 'errno', '')}"


def write(rel, data, mode="w"):
    with open(os.path.join(ROOT, rel), mode) as f:
        f.write(data)
    return "wrote " + rel


attempt("a: rewrite target", lambda: write("services/agents/alpha.py", "HACKED = 1\n"))
attempt("a: unlink target", lambda: os.unlink(TARGET))
attempt("b: modify snapshot", lambda: write("backups/agents/alpha/green_1.py", "HACKED\n"))
attempt("b: delete backups", lambda: shutil.rmtree(os.path.join(ROOT, "backups")))
attempt("c: append events", lambda: write(".bluegreen/agents/alpha/events.jsonl", "{}\n", "a"))
attempt("d: rewrite config", lambda: write("bluegreen.toml", "[chains]\ndefault = []\n"))
attempt("root: new file", lambda: write("dropped.py", "x = 1\n"))


def parent_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def ancestors():
    pids = [os.getppid()]
    try:
        while pids[-1] > 1 and pids[-1] != TEST_PID:
            pids.append(parent_of(pids[-1]))
    except OSError:
        pass
    pids.append(TEST_PID)
    return sorted({p for p in pids if p > 1})


def read_environ(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        data = f.read()
    return "TOKEN FOUND" if TOKEN in data else f"read {len(data)} bytes"


def read_mem(pid):
    with open(f"/proc/{pid}/mem", "rb") as f:
        return f"opened {f!r}"


libc = ctypes.CDLL(None, use_errno=True)


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def ptrace_seize(pid):
    if libc.ptrace(0x4206, pid, None, None) != 0:  # PTRACE_SEIZE: does not stop the tracee
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
    return "seized"


def vm_read(pid):
    buf = ctypes.create_string_buffer(64)
    local = IoVec(ctypes.cast(buf, ctypes.c_void_p), 64)
    remote = IoVec(0x10000, 64)
    libc.process_vm_readv.restype = ctypes.c_ssize_t
    n = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    err = ctypes.get_errno()
    if n < 0 and err != 14:  # EFAULT: permitted, just a bad address
        raise OSError(err, os.strerror(err))
    return f"permitted ({n}, errno {err})"


for pid in ancestors():
    attempt(f"e: environ of {pid}", lambda pid=pid: read_environ(pid))
    attempt(f"f: mem of {pid}", lambda pid=pid: read_mem(pid))
    attempt(f"f: process_vm_readv {pid}", lambda pid=pid: vm_read(pid))
    if PTRACE:
        attempt(f"f: ptrace {pid}", lambda pid=pid: ptrace_seize(pid))

raise RuntimeError("ATTACKS " + json.dumps(RESULTS, sort_keys=True))
