"""RayExecutor: each job a Ray task that runs the same sandboxed worker (``jobs.run_job``) on its node.

    pip install 'reward-designer[ray]'
    reward-designer bench --suite standard ... --executor ray --address auto

The job's folder must be one every node sees at the same path (a shared file
system; on one machine, any folder): the worker reads its inputs and leaves
its outputs there, as it does locally, and a node that does not see it fails
the job saying so. A job asks Ray for a GPU only when it runs on CUDA and the
cluster has one: on a cluster without, a task asking for a GPU would wait
forever, so such a job fails at once instead. Ray reserves ``cpus_per_job``
CPUs for each job but pins none: the worker sizes its simulator to the cores
its node gives the Ray worker process.
"""

from __future__ import annotations

import socket
from pathlib import Path

from .executor import PooledExecutor
from .jobs import JobOutcome
from .sandbox import Limits

POLL_S = 0.5  # how often a job in flight is checked (and its ``poll`` called)


def _on_node(job_json: str, workdir: str, limits_json: str, require_sandbox: bool, read_only: list[str]) -> str:
    """The Ray task: the job, validated again here, through the sandboxed worker on this node; its outcome as JSON."""
    from pydantic import TypeAdapter

    from .jobs import run_job
    from .schemas import Job

    folder = Path(workdir)
    if not folder.is_dir():  # the driver made it: this node does not see the driver's files
        raise RuntimeError(f"{folder} is not on node {socket.gethostname()}: a Ray cluster's jobs need "
                           "the batch's folder on a file system every node mounts at the same path")
    job = TypeAdapter(Job).validate_json(job_json)
    outcome = run_job(job, folder, Limits.model_validate_json(limits_json), require_sandbox=require_sandbox,
                      read_only=[Path(p) for p in read_only])
    return outcome.model_dump_json()


class RayExecutor(PooledExecutor):
    """Jobs as Ray tasks on a cluster (``address``: "auto", "ray://host:10001"; None: the Ray already
    started in this process, else a new local one), ``slots`` at once."""

    def __init__(self, slots: int = 1, require_sandbox: bool = False, address: str | None = None,
                 cpus_per_job: float = 1):
        try:
            import ray
        except ImportError:
            raise ImportError("the Ray executor needs Ray: pip install 'reward-designer[ray]'") from None
        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=False)
        super().__init__(slots, require_sandbox, "ray-job")
        self.cpus_per_job = cpus_per_job
        self._task = ray.remote(max_retries=0)(_on_node)  # a retried training would start over: say it failed

    @property
    def gpus(self) -> float:
        import ray

        return ray.cluster_resources().get("GPU", 0.0)

    def _run(self, job, workdir: Path, limits: Limits, poll, read_only) -> JobOutcome:
        import ray

        self.raise_if_cancelled()
        on_gpu = str(getattr(job, "device", "cpu")).startswith("cuda")
        if on_gpu and self.gpus < 1:
            raise RuntimeError("the job runs on CUDA and the Ray cluster has no GPU (it would wait for one forever)")
        workdir.mkdir(parents=True, exist_ok=True)  # so a node can tell that it sees this folder
        ref = self._task.options(num_cpus=self.cpus_per_job, num_gpus=1 if on_gpu else 0).remote(
            job.model_dump_json(), str(workdir), limits.model_dump_json(), self.require_sandbox,
            [str(Path(p).resolve()) for p in read_only])
        try:
            while not ray.wait([ref], timeout=POLL_S)[0]:
                self.raise_if_cancelled()
                if poll is not None:
                    poll()
        except BaseException:
            ray.cancel(ref, force=True)  # kills the Ray worker, and its sandboxed worker with it
            raise
        return JobOutcome.model_validate_json(ray.get(ref))
