"""A private MariaDB server under a directory we own.

Used by the test suite (one server per pytest session) and by the central server's "embedded" database mode,
where it runs as a supervised child process. Nothing here touches the distribution's service, its
configuration files (`--no-defaults`) or any network interface except the loopback port asked for.

Sync use::

    with MariaDBServer(MariaDBConfig(datadir)) as server:
        params = server.params          # unix socket + user, for vmproto.server.db

Trio use::

    params = await nursery.start(supervise_mariadb, MariaDBConfig(datadir))
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

__all__ = [
    "MariaDBConfig",
    "MariaDBError",
    "MariaDBParams",
    "MariaDBServer",
    "find_binary",
    "install_datadir",
    "supervise_mariadb",
]

log = logging.getLogger(__name__)


class MariaDBError(RuntimeError):
    """The private MariaDB could not be installed, started or stopped. The message names the log to read."""


@dataclass(frozen=True, slots=True)
class MariaDBParams:
    """How to reach a running private server: `unix_socket` always, `port` on 127.0.0.1 when asked for."""

    unix_socket: str
    user: str
    port: int | None = None
    host: str = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class MariaDBConfig:
    """Where and how to run a private server.

    `datadir` is created if missing; the socket, pid file and error log live inside it (the socket path
    must stay under the ~107-byte AF_UNIX limit). `port` None means `--skip-networking`; otherwise
    the server listens on 127.0.0.1:`port` only. The buffer sizes are small on purpose: tests and small
    deployments; the embedded mode passes bigger ones through `extra_args`.
    """

    datadir: Path
    port: int | None = None
    innodb_buffer_pool_size: str = "64M"
    innodb_log_file_size: str = "32M"
    max_connections: int = 100
    start_timeout: float = 60.0
    stop_timeout: float = 30.0
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    @property
    def socket_path(self) -> Path:
        return self.datadir / "mysqld.sock"

    @property
    def pid_file(self) -> Path:
        return self.datadir / "mysqld.pid"

    @property
    def error_log(self) -> Path:
        return self.datadir / "mysqld.err"

    @property
    def db_dir(self) -> Path:
        return self.datadir / "data"

    @property
    def tmp_dir(self) -> Path:
        """Private temporary directory: instances installing or running at the same time must not share /tmp
        (two concurrent installs collided on a temporary table there)."""
        return self.datadir / "tmp"


def find_binary(*names: str) -> str:
    """Return the path of the first of `names` found on PATH, /usr/sbin or /usr/bin.

    Raises MariaDBError when none is installed.
    """
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/usr/local/sbin"])
    for name in names:
        found = shutil.which(name, path=search)
        if found:
            return found
    raise MariaDBError(f"none of {', '.join(names)} is installed (need the mariadb-server package)")


def _run_as_user_args() -> list[str]:
    # mariadbd refuses to run as root unless told to; as another user it must not get --user at all
    # (it would try to setuid and fail).
    if os.geteuid() == 0:
        return ["--user=root"]
    return []


def install_datadir(config: MariaDBConfig) -> bool:
    """Create the system tables under `config.db_dir` unless they exist.

    The local root account authenticates by unix socket (the OS user must be root, or the current user
    when not running as root: mariadb-install-db then creates an account for it). Returns True when a new
    data directory was created. Raises MariaDBError with the installer's output on failure.
    """
    if (config.db_dir / "mysql").is_dir():
        return False
    config.datadir.mkdir(parents=True, exist_ok=True)
    config.tmp_dir.mkdir(exist_ok=True)
    cmd = [
        find_binary("mariadb-install-db", "mysql_install_db"),
        "--no-defaults",
        f"--datadir={config.db_dir}",
        f"--tmpdir={config.tmp_dir}",
        "--auth-root-authentication-method=socket",
        "--skip-test-db",
        "--skip-name-resolve",
        *_run_as_user_args(),
    ]
    log.info("mariadb: installing system tables in %s", config.db_dir)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise MariaDBError(
            f"mariadb-install-db failed (exit {proc.returncode}) for {config.db_dir}:\n{proc.stdout}\n{proc.stderr}"
        )
    return True


def server_command(config: MariaDBConfig) -> list[str]:
    """Return the mariadbd command line for `config` (creating its private tmp directory when missing)."""
    config.tmp_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        find_binary("mariadbd", "mysqld"),
        "--no-defaults",
        f"--datadir={config.db_dir}",
        f"--tmpdir={config.tmp_dir}",
        f"--socket={config.socket_path}",
        f"--pid-file={config.pid_file}",
        f"--log-error={config.error_log}",
        f"--innodb-buffer-pool-size={config.innodb_buffer_pool_size}",
        f"--innodb-log-file-size={config.innodb_log_file_size}",
        f"--max-connections={config.max_connections}",
        "--skip-name-resolve",
        "--skip-log-bin",
        # The reference central's tables are latin1/utf8mb3 explicitly; the server default only matters
        # for our own bookkeeping tables and sessions.
        "--character-set-server=utf8mb4",
        "--collation-server=utf8mb4_general_ci",
        *_run_as_user_args(),
    ]
    if config.port is None:
        cmd.append("--skip-networking")
    else:
        cmd += ["--bind-address=127.0.0.1", f"--port={config.port}"]
    cmd += list(config.extra_args)
    return cmd


def _socket_ready(path: Path) -> bool:
    """True when something accepts connections on the unix socket `path`."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.connect(str(path))
        # The server greets first; a greeting proves it is past start-up, not just bound.
        return len(s.recv(1)) == 1
    except OSError:
        return False
    finally:
        s.close()


def _log_tail(config: MariaDBConfig, lines: int = 20) -> str:
    try:
        text = config.error_log.read_text(errors="replace")
    except OSError:
        return "(no error log)"
    return "\n".join(text.splitlines()[-lines:])


def _params(config: MariaDBConfig) -> MariaDBParams:
    return MariaDBParams(unix_socket=str(config.socket_path), user=_db_user(), port=config.port)


def _db_user() -> str:
    # unix_socket authentication maps the OS user to the same-named DB account.
    if os.geteuid() == 0:
        return "root"
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


class MariaDBServer:
    """A private mariadbd run synchronously (tests, tools). `start()` returns when it accepts connections."""

    def __init__(self, config: MariaDBConfig) -> None:
        self.config = config
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def params(self) -> MariaDBParams:
        return _params(self.config)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> MariaDBParams:
        """Install the data directory if needed, start mariadbd and wait until it is ready.

        Returns the connection parameters. Raises MariaDBError (with the error log's tail) when the server
        exits early or is not ready within `config.start_timeout` seconds; the process is killed then.
        """
        if self._proc is not None:
            raise MariaDBError("server already started")
        install_datadir(self.config)
        self.config.socket_path.unlink(missing_ok=True)
        log.info("mariadb: starting in %s", self.config.datadir)
        self._proc = subprocess.Popen(
            server_command(self.config), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + self.config.start_timeout
        while not _socket_ready(self.config.socket_path):
            rc = self._proc.poll()
            if rc is not None:
                self._proc = None
                raise MariaDBError(f"mariadbd exited with {rc} during start-up:\n{_log_tail(self.config)}")
            if time.monotonic() > deadline:
                self.kill()
                raise MariaDBError(
                    f"mariadbd not ready after {self.config.start_timeout}s:\n{_log_tail(self.config)}"
                )
            time.sleep(0.05)
        log.info("mariadb: ready on %s (pid %d)", self.config.socket_path, self._proc.pid)
        return self.params

    def stop(self) -> None:
        """Stop cleanly (SIGTERM, wait `stop_timeout`), killing the server if it does not exit in time."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(self.config.stop_timeout)
            log.info("mariadb: stopped (exit %s)", proc.returncode)
        except subprocess.TimeoutExpired:
            log.warning("mariadb: no exit %ss after SIGTERM, killing", self.config.stop_timeout)
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """Kill the server at once (SIGKILL). Used on failures and by crash-recovery tests."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def __enter__(self) -> MariaDBServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


async def _wait_ready(config: MariaDBConfig, proc: trio.Process) -> None:
    with trio.fail_after(config.start_timeout):
        while not await trio.to_thread.run_sync(_socket_ready, config.socket_path):
            if proc.returncode is not None:
                raise MariaDBError(
                    f"mariadbd exited with {proc.returncode} during start-up:\n{_log_tail(config)}"
                )
            await trio.sleep(0.05)


async def supervise_mariadb(
    config: MariaDBConfig,
    *,
    task_status: trio.TaskStatus[MariaDBParams] = trio.TASK_STATUS_IGNORED,
    max_backoff: float = 30.0,
    on_restart: Callable[[int], None] | None = None,
) -> None:
    """Run mariadbd as a child for as long as the calling task lives, restarting it when it dies.

    Use with `await nursery.start(supervise_mariadb, config)`: `task_status.started` receives the
    connection parameters once the first start succeeded. A failed first start raises MariaDBError out of
    `nursery.start`. After a crash the server is restarted after a back-off that doubles from 0.5 s up to
    `max_backoff` and resets after 60 s of healthy running; `on_restart(attempt)` is called before each
    restart. On cancellation the server gets SIGTERM and `stop_timeout` seconds before SIGKILL.
    """
    await trio.to_thread.run_sync(install_datadir, config)
    backoff = 0.5
    attempt = 0
    started = False
    while True:
        config.socket_path.unlink(missing_ok=True)
        log.info("mariadb: starting in %s (attempt %d)", config.datadir, attempt)
        async with trio.open_nursery() as nursery:
            proc: trio.Process = await nursery.start(_run_server_process, config)
            try:
                await _wait_ready(config, proc)
            except (MariaDBError, trio.TooSlowError) as exc:
                nursery.cancel_scope.cancel()
                if not started:
                    raise MariaDBError(f"mariadbd failed to start: {exc}\n{_log_tail(config)}") from exc
                log.error("mariadb: restart failed: %s", exc)
            else:
                if not started:
                    started = True
                    task_status.started(_params(config))
                up_since = trio.current_time()
                await proc.wait()
                if trio.current_time() - up_since > 60:
                    backoff = 0.5
                log.error("mariadb: server exited with %s:\n%s", proc.returncode, _log_tail(config))
                nursery.cancel_scope.cancel()
        attempt += 1
        if on_restart is not None:
            on_restart(attempt)
        log.info("mariadb: restarting in %.1fs", backoff)
        await trio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff)


async def _run_server_process(config: MariaDBConfig, *, task_status: trio.TaskStatus[trio.Process]) -> None:
    """Run one mariadbd process; on cancellation terminate it gracefully, then kill it."""
    proc = await trio.lowlevel.open_process(
        server_command(config), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        task_status.started(proc)
        await proc.wait()
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.terminate()
                with trio.move_on_after(config.stop_timeout):
                    await proc.wait()
                if proc.returncode is None:
                    log.warning("mariadb: no exit %ss after SIGTERM, killing", config.stop_timeout)
                    proc.kill()
                    await proc.wait()
