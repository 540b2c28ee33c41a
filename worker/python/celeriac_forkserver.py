"""celeriac warm-Python fork server.

Started by celeriac-worker's `warm_python` runtime as
`python -c <this file> <socket path> <preload>...`. It imports the preload
modules once (Airflow takes 1.7-2.8 s to import) and runs the `warm:<name>`
entries (per-process caches every task would otherwise rebuild), listens on a Unix
socket, and for every connection forks one child that runs a module as
`python -m <module> <args>` would, in its own process group, with the
stdout/stderr pipes the worker passed over the socket (SCM_RIGHTS).

Protocol, one connection per task:
  worker -> server: one JSON line {"module", "argv", "env", "cwd"} carrying
                    two fds (stdout, stderr write ends) on its first byte
  server -> worker: {"pid": N}\n once forked, then {"exit": code}\n when the
                    child ended (negative code = killed by that signal)
The server exits when its stdin is closed (the worker is gone). Children
already running are left to finish, as the process runtime leaves them.

The server keeps one child forked ahead (the spare), waiting on a socket
pair: a task is handed to it with its fds, and the next spare is forked
after the reply. Forking a ~150 MB Python takes ~5 ms and the child's first
steps as much again; the spare takes both off the task's start (measured:
bench/airflow.md).
"""

import gc
import importlib
import json
import os
import runpy
import selectors
import signal
import socket
import sys
import time
import traceback


def warm_airflow_api_client():
    """The Task SDK's API client builds its SSL context (CA bundle loading,
    ~0.1 s) once per process and caches it. Built here, every forked task
    inherits it, as a prefork pool process reuses the one it built first."""
    from airflow.sdk.api import client

    client.Client._get_ssl_context_cached(client.API_SSL_CA_FILE_PATH, client.API_SSL_CERT_PATH)
    warm_http_round_trip(client.Client)


def warm_http_round_trip(client_class):
    """One request through the Task SDK's client to a throwaway local
    server: the first request of a process costs 8-13 ms more than the next
    ones (httpx, h11 and the client's lazily built state), and every task's
    supervisor would pay it again as its first, critical request (`/run`).
    A prefork pool process pays it once. The server's thread is gone before
    anything forks."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Ok(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args):
            pass

    with HTTPServer(("127.0.0.1", 0), Ok) as httpd:
        thread = threading.Thread(target=httpd.handle_request, daemon=True)
        thread.start()
        try:
            port = httpd.server_address[1]
            base_url = f"http://127.0.0.1:{port}/execution/"
            # No proxy from the environment for this local request, and httpx's own
            # request (not the client's retrying one): a failure costs no retries.
            with client_class(base_url=base_url, token="warm-up", trust_env=False) as c:
                import httpx

                httpx.Client.request(c, "GET", "warm-up", timeout=5)
        finally:
            thread.join(timeout=5)


def warm_airflow_task_logging():
    """`execute_workload` disposes the ORM and configures JSON logging to
    stdout in every task: ~16 ms before the task runner can start.
    `configure_logging` is cached on its arguments, so once called here with
    the very same ones, each forked task finds it done; by then its fd 1 is
    the task's stdout pipe, which is where `sys.stdout.buffer` writes. A
    prefork pool process likewise configures its logging once. After this,
    anything the server itself logs goes to its stdout as JSON."""
    from airflow.sdk.log import configure_logging
    from airflow.settings import dispose_orm

    dispose_orm(do_log=False)
    configure_logging(output=sys.stdout.buffer, json_output=True)


# Preload entries `warm:<name>` run one of these after the imports before them.
WARMUPS = {
    "airflow-api-client": warm_airflow_api_client,
    "airflow-task-logging": warm_airflow_task_logging,
}


def preload(entries):
    """Import each module, or run each `warm:` entry, in order. A module
    named `?<module>` is optional: skipped quietly when not installed."""
    for name in entries:
        optional = name.startswith("?")
        name = name.lstrip("?")
        try:
            if name.startswith("warm:"):
                WARMUPS[name[len("warm:"):]]()
            else:
                importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if not (optional and exc.name and name.startswith(exc.name)):
                print(f"preload {name} failed: {exc!r}", file=sys.stderr, flush=True)
        except Exception as exc:  # noqa: BLE001 - report and go on: the child does it again
            print(f"preload {name} failed: {exc!r}", file=sys.stderr, flush=True)


def read_request(conn, timeout=10):
    """One request line, as sent, and its fds; empty if the peer closed first."""
    conn.settimeout(timeout)
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 4)
    while data and not data.endswith(b"\n"):
        more = conn.recv(1 << 16)
        if not more:
            break
        data += more
    conn.settimeout(None)
    return data, fds


def become_task_process(inherited):
    """First steps of a forked child: its own process group, default signal
    handling, none of the server's fds (`inherited`: listener, wake-up pipe,
    other tasks' connections, the spare's socket)."""
    os.setpgid(0, 0)
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    for fd in inherited:
        try:
            os.close(fd)
        except OSError:
            pass


def run_child(req, fds):
    """In the forked child, after `become_task_process`: never returns."""
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in [devnull, *fds]:
            if fd > 2:
                os.close(fd)
        if req.get("cwd"):
            os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req.get("env") or {})
        sys.argv = list(req["argv"])
        # Preloaded, the module would run from a second copy and runpy warns
        # about it; its (heavy) imports stay loaded.
        sys.modules.pop(req["module"], None)
        runpy.run_module(req["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - the task's own error: print it as Python would
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code & 0xFF)


def send_line(conn, obj):
    try:
        conn.sendall(json.dumps(obj).encode() + b"\n")
    except OSError:
        pass  # the worker stopped waiting (shutdown): nothing to tell


def main():
    path, modules = sys.argv[1], sys.argv[2:]
    started = time.monotonic()
    preload(modules)
    # What is loaded now is shared by every child: frozen, the children's
    # garbage collections never touch it, so its pages are not copied into
    # each task (Python's gc.freeze() advice for forking servers).
    gc.collect()
    gc.freeze()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.exists(path):
        os.unlink(path)
    listener.bind(path)
    listener.listen(64)
    wakeup_r, wakeup_w = os.pipe()
    os.set_blocking(wakeup_r, False)
    os.set_blocking(wakeup_w, False)
    signal.set_wakeup_fd(wakeup_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    # The worker's terminal signals are for the worker; it closes our stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sel = selectors.DefaultSelector()
    own = [listener.fileno(), wakeup_r, wakeup_w, sel.fileno()]
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(wakeup_r, selectors.EVENT_READ, "child")
    sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
    children = {}
    spare = Spare()
    spare.fork(own, children)
    print(f"ready {time.monotonic() - started:.3f}", flush=True)
    while True:
        for key, _ in sel.select():
            if key.data == "stdin":
                if not os.read(sys.stdin.fileno(), 4096):
                    os.unlink(path)
                    return  # the spare reads EOF and exits
            elif key.data == "child":
                os.read(wakeup_r, 4096)
                reap(children, spare)
            else:
                accept(listener, children, own, spare)
        reap(children, spare)


class Spare:
    """The child forked ahead of the next task, and the socket it waits on."""

    def __init__(self):
        self.pid = None
        self.sock = None

    def fork(self, own, children):
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = fork_task_process(own + [parent_end.fileno()], children)
        if pid == 0:
            try:
                data, fds = read_request(child_end, timeout=None)
                if not data:
                    os._exit(0)  # the server stopped: no task for this spare
                req = json.loads(data)
            except Exception:  # noqa: BLE001 - the server is gone or broke the request
                os._exit(1)
            child_end.close()
            run_child(req, fds)
        child_end.close()
        self.pid, self.sock = pid, parent_end

    def hand_over(self, data, fds):
        """Give the task (its request line as received) to the spare: its
        pid, or None if it is gone."""
        pid, sock = self.pid, self.sock
        self.pid = self.sock = None
        if pid is None:
            return None
        try:
            try:
                sent = socket.send_fds(sock, [data], fds)
            except OSError:
                return None  # it died (killed, out of memory): nothing handed over, fork
            # From here on the task is the spare's: never fork it a second time.
            # (The spare closes its end once it read the line, so sending
            # nothing more could fail with EPIPE.)
            if sent < len(data):
                try:
                    sock.sendall(data[sent:])
                except OSError:
                    pass  # it died mid-request: its exit is the task's
            return pid
        finally:
            sock.close()

    def died(self, pid):
        if pid == self.pid:
            self.sock.close()
            self.pid = self.sock = None


def fork_task_process(inherited, children):
    """fork(); in the child, `become_task_process` has run and 0 is returned."""
    sys.stdout.flush()
    sys.stderr.flush()
    inherited = inherited + [c.fileno() for c in children.values()]
    pid = os.fork()
    if pid == 0:
        become_task_process(inherited)
        return 0
    try:
        os.setpgid(pid, pid)  # also here: no race with a signal sent right away
    except OSError:
        pass  # it already exec'd or exited; its own setpgid ran
    return pid


def accept(listener, children, own, spare):
    conn, _ = listener.accept()
    try:
        data, fds = read_request(conn)
        req = json.loads(data)  # checked here: a bad request is answered, not forked
    except Exception as exc:  # noqa: BLE001 - a bad request fails that task only
        send_line(conn, {"error": f"bad request: {exc!r}"})
        conn.close()
        return
    pid = spare.hand_over(data, fds)
    if pid is None:
        pid = fork_task_process(own + [conn.fileno()], children)
        if pid == 0:
            run_child(req, fds)
    for fd in fds:
        os.close(fd)
    children[pid] = conn
    send_line(conn, {"pid": pid})
    spare.fork(own, children)


def reap(children, spare):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        spare.died(pid)
        conn = children.pop(pid, None)
        if conn is not None:
            send_line(conn, {"exit": os.waitstatus_to_exitcode(status)})
            conn.close()


if __name__ == "__main__":
    main()
