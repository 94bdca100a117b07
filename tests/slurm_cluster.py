"""A real single-node SLURM cluster in a temporary folder: munged, MariaDB, slurmdbd, slurmctld and slurmd, all
started here, as root, and stopped by their PIDs.

    python -m tests.slurm_cluster /tmp/cluster          # start one and print the SLURM_CONF to export; Ctrl-C stops it

Needs Debian's ``slurm-wlm``, ``slurmdbd``, ``munge`` and ``mariadb-server`` packages (``apt-get install -y
slurm-wlm slurmdbd munge mariadb-server``; .ci/run installs them) and root (slurmd starts jobs as their users).
Each daemon gets its own config, key, pid, log and state files in the folder, and ports picked free at start. One
thing lives outside it: MUNGE's socket, at its default path (/run/munge/munge.socket.2), because SLURM 22.05's
accounting client ignores ``AuthInfo=socket=``; a munged already answering there (a developer's) is used as it is,
else one is started with the folder's own key. The node is this machine, offering 4 CPUs and 16 GB whatever it
has, in partition ``cpu``, with accounting (``sacct`` works as on a real cluster). ``AuthInfo=cred_expire=10`` and
a one-second scheduling interval let a requeued job start again within seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "mariadb-install-db", "sacctmgr")
CPUS, MEMORY_MB = 4, 16384  # what the node offers SLURM (SlurmdParameters=config_overrides: more than it has is
#                             allowed, so that the tests' four one-CPU jobs run side by side on 2 cores)
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")


def missing() -> str | None:
    """Why no cluster can start here (a missing program, not root), or None."""
    gone = [p for p in DAEMONS if shutil.which(p) is None and not Path(f"/usr/sbin/{p}").exists()]
    if gone:
        packages = "slurm-wlm slurmdbd munge mariadb-server"
        return f"SLURM is not installed ({', '.join(gone)} missing): apt-get install -y {packages}"
    if os.geteuid() != 0:
        return "the SLURM test cluster starts its daemons as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _program(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@dataclass
class Cluster:
    root: Path
    host: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """The environment a client command (sbatch, squeue, a submitit launcher) needs to reach this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *args: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout, check=check)

    def _start(self, name: str, args: list[str], pid_file: Path, timeout: float = 20) -> None:
        subprocess.run(args, check=True, capture_output=True, timeout=timeout, env=self.env)
        deadline = time.monotonic() + timeout
        while not (pid_file.exists() and pid_file.read_text().strip()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} wrote no pid file {pid_file}; see its log in {self.root}")
            time.sleep(0.05)
        self.pids[name] = int(pid_file.read_text().split()[0])

    def start(self) -> Cluster:
        """Start every daemon and wait until the node is idle (about 10 s)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in ("munge", "db", "ctld", "d"):
            (self.root / sub).mkdir(exist_ok=True)
        self._munge()
        self._mariadb()
        self._write_configs()
        self._start("slurmdbd", [_program("slurmdbd")], self.root / "slurmdbd.pid")
        self._wait(lambda: self.run("sacctmgr", "-n", "list", "cluster", check=False).returncode == 0, "slurmdbd")
        self.run("sacctmgr", "-i", "add", "cluster", "saesweep", check=False)
        self._start("slurmctld", [_program("slurmctld"), "-f", str(self.conf)], self.root / "slurmctld.pid")
        self._start("slurmd", [_program("slurmd"), "-f", str(self.conf)], self.root / "slurmd.pid")
        self._wait(self._idle, "the node to be idle", timeout=60)
        return self

    def _munge(self) -> None:
        probe = subprocess.run("munge -n | unmunge", shell=True, capture_output=True, timeout=10)
        if probe.returncode == 0:
            return  # a munged already serves the default socket: use it
        key, m = self.root / "munge" / "munge.key", self.root / "munge"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        args = [_program("munged"), f"--key-file={key}", f"--socket={MUNGE_SOCKET}", f"--pid-file={m / 'pid'}",
                f"--log-file={m / 'log'}", f"--seed-file={m / 'seed'}", "--force"]  # fmt: skip
        self._start("munged", args, m / "pid")

    def _mariadb(self) -> None:
        db = self.root / "db"
        self.db_port, self.db_sock = _free_port(), db / "mysqld.sock"
        subprocess.run([_program("mariadb-install-db"), f"--datadir={db / 'data'}", "--user=root",
                        "--auth-root-authentication-method=socket", "--skip-test-db"],
                       check=True, capture_output=True, timeout=60)  # fmt: skip
        mysqld = subprocess.Popen(
            [_program("mariadbd"), "--no-defaults", f"--datadir={db / 'data'}", f"--socket={self.db_sock}",
             f"--port={self.db_port}", "--bind-address=127.0.0.1", f"--pid-file={db / 'pid'}", "--user=root",
             f"--log-error={db / 'err.log'}", "--skip-log-bin", "--innodb-buffer-pool-size=32M"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.pids["mariadbd"] = mysqld.pid
        self._mysqld = mysqld  # reaped at stop
        sql = "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; GRANT ALL ON *.* TO 'slurm'@'127.0.0.1';"
        self._wait(lambda: subprocess.run([_program("mariadb"), f"--socket={self.db_sock}", "-e", sql],
                                          capture_output=True).returncode == 0, "MariaDB")  # fmt: skip

    def _write_configs(self) -> None:
        r = self.root
        self.ctld_port, self.d_port, self.dbd_port = _free_port(), _free_port(), _free_port()
        auth = "AuthType=auth/munge\nAuthInfo=cred_expire=10\n"
        dbd = r / "slurmdbd.conf"
        dbd.write_text(
            f"{auth}DbdHost=localhost\nDbdPort={self.dbd_port}\nSlurmUser=root\nPidFile={r / 'slurmdbd.pid'}\n"
            f"LogFile={r / 'slurmdbd.log'}\nStorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\n"
            f"StoragePort={self.db_port}\nStorageUser=slurm\nStoragePass=slurm\nStorageLoc=slurm_acct\n"
        )
        dbd.chmod(0o600)
        self.conf.write_text(
            f"ClusterName=saesweep\nSlurmctldHost={self.host}\n{auth}CredType=cred/munge\nSlurmUser=root\n"
            f"SlurmctldPort={self.ctld_port}\nSlurmdPort={self.d_port}\nStateSaveLocation={r / 'ctld'}\n"
            f"SlurmdSpoolDir={r / 'd'}\nSlurmctldPidFile={r / 'slurmctld.pid'}\nSlurmdPidFile={r / 'slurmd.pid'}\n"
            f"SlurmctldLogFile={r / 'slurmctld.log'}\nSlurmdLogFile={r / 'slurmd.log'}\n"
            "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/affinity\nMpiDefault=none\n"
            "SchedulerType=sched/backfill\nSchedulerParameters=sched_interval=1,bf_interval=1\n"
            "SelectType=select/cons_tres\nSelectTypeParameters=CR_Core_Memory\nReturnToService=2\nJobRequeue=1\n"
            "KillWait=5\nMinJobAge=300\nInactiveLimit=0\nMessageTimeout=10\n"
            f"AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\n"
            f"AccountingStoragePort={self.dbd_port}\nJobAcctGatherType=jobacct_gather/none\n"
            "SlurmdParameters=config_overrides\n"
            f"NodeName={self.host} CPUs={CPUS} RealMemory={MEMORY_MB} State=UNKNOWN\n"
            f"PartitionName=cpu Nodes={self.host} Default=YES MaxTime=INFINITE State=UP\n"
        )
        os.environ.setdefault("SLURM_CONF", str(self.conf))  # slurmdbd reads its own file beside slurm.conf
        (r / "slurmdbd.conf").chmod(0o600)

    def _idle(self) -> bool:
        out = self.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip()
        return out == "idle"

    def _wait(self, ready, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the test cluster's {what} did not come up within {timeout:.0f} s; logs in {self.root}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """Cancel every job, then stop each daemon this cluster started, by its PID (SIGKILL after 5 s)."""
        self.run("scancel", "--full", "-u", "root", check=False)
        for pid in self.pids.values():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        for pid in self.pids.values():
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.pids.clear()
        if getattr(self, "_mysqld", None) is not None:
            self._mysqld.wait(timeout=10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main(argv: list[str]) -> int:
    why = missing()
    if why:
        print(why, file=sys.stderr)
        return 2
    cluster = Cluster(Path(argv[0]) if argv else Path("/tmp/sae-sweep-slurm")).start()
    print(f"cluster up: export SLURM_CONF={cluster.conf}   (Ctrl-C or kill {os.getpid()} stops it)", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
