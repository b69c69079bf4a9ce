"""A real one-node Slurm cluster on localhost for the tests (slurm-wlm + munge from Debian).

Installed with apt when missing and the tests run as root; the daemons run in the foreground
as children of the test process and are stopped by pid afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

# cred_expire: a requeued job waits this long before it starts again (default 120 s); then the
# scheduler's next periodic pass starts it (sched_interval, default 60 s).
SLURM_CONF = """ClusterName=voxadapt-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class SlurmUnavailable(Exception):
    pass


def ensure_installed() -> None:
    if shutil.which("sbatch") and shutil.which("slurmctld") and shutil.which("munged"):
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable("Slurm is not installed and the tests do not run as root (apt-get install slurm-wlm munge)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            raise SlurmUnavailable(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-300:]}")


def _munge_works() -> bool:
    try:
        enc = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        return enc.returncode == 0 and subprocess.run(["unmunge"], input=enc.stdout, capture_output=True,
                                                       timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class LocalSlurm:
    def __init__(self, root: Path):
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.env: dict[str, str] = {}

    def start(self) -> None:
        ensure_installed()
        if os.geteuid() != 0:
            raise SlurmUnavailable("starting slurmctld/slurmd needs root")
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if not _munge_works():
            key = Path("/etc/munge/munge.key")
            if not key.is_file():
                subprocess.run(["mungekey", "--create"], check=True, capture_output=True)
                shutil.chown(key, "munge", "munge")
            Path("/run/munge").mkdir(parents=True, exist_ok=True)
            shutil.chown("/run/munge", "munge", "munge")
            self.procs.append(subprocess.Popen(["runuser", "-u", "munge", "--", "munged", "--foreground"],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            self._wait(_munge_works, "munged")
        mem = int(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 * 0.8)
        port = 47000 + os.getpid() % 1000
        conf = self.root / "slurm.conf"
        conf.write_text(SLURM_CONF.format(root=self.root, ctld_port=port, d_port=port + 1, cpus=os.cpu_count(), mem=mem))
        self.env = {"SLURM_CONF": str(conf)}
        env = {**os.environ, **self.env}
        for cmd in (["slurmctld", "-D", "-i"], ["slurmd", "-D", "-N", "localhost"]):
            log = open(self.root / "log" / f"{cmd[0]}.log", "w")
            self.procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        self._wait(lambda: "idle" in subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True,
                                                     text=True).stdout, "the Slurm node")

    def _wait(self, ready, what: str, timeout: float = 60) -> None:  # noqa: ANN001
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ready():
                return
            time.sleep(0.5)
        raise SlurmUnavailable(f"{what} did not come up within {timeout:.0f} s (see {self.root}/log)")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
